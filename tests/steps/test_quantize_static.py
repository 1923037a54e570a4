"""quantize.ort_static: QDQ int8 calibrated on the recipe's data; smaller, close to fp32, cached."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from workbench.artifact import Artifact
from workbench.data import Dataset, arrays_digest
from workbench.data.metrics import top1_accuracy
from workbench.errors import BuildError
from workbench.models import SourceModel
from workbench.recipe.spec import StepSpec
from workbench.steps import QuantizeOrtStatic, QuantizeOrtStaticConfig, StepContext
from workbench.steps.quantize.ort import needs_reduced_range
from workbench.sweep.cache import build


def _accuracy(path: Path, dataset: Dataset) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, dataset.inputs)[0]
    return top1_accuracy({"logits": logits}, {}, dataset.labels)


def _ops(artifact: Artifact) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(artifact.path)).graph.node)


@pytest.fixture(scope="module")
def calibrated(digits_context: StepContext, digits_dataset: Dataset) -> StepContext:
    """What the runner hands to steps: held-out batches of the recipe's data (here four of 64 training digits)."""
    assert digits_dataset.calibration is not None
    held_out = tuple(Dataset(digits_dataset.calibration).batches(64))[:4]
    return replace(digits_context, calibration_inputs=held_out, calibration_digest=arrays_digest(held_out))


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_int8_is_qdq_smaller_and_keeps_accuracy(
    method: str, digits_onnx: Artifact, digits_dataset: Dataset, calibrated: StepContext, tmp_path: Path
) -> None:
    config = QuantizeOrtStaticConfig.model_validate({"calibrate_method": method, "calibration_samples": 200})

    quantized = QuantizeOrtStatic().apply(digits_onnx, config, tmp_path, calibrated)

    ops = _ops(quantized)
    assert ops["QuantizeLinear"] >= 4 and ops["DequantizeLinear"] >= 8  # activations and weights
    assert quantized.figures["quantized_nodes"] == 4  # both Convs and both Gemms
    assert quantized.figures["qdq_nodes"] == ops["QuantizeLinear"] + ops["DequantizeLinear"]
    assert quantized.figures["calibration_samples"] == 200
    assert quantized.figures["size_ratio"] < 0.35 and quantized.size_bytes < 0.35 * digits_onnx.size_bytes
    assert _accuracy(quantized.path, digits_dataset) >= _accuracy(digits_onnx.path, digits_dataset) - 0.01


def test_weights_are_stored_as_int8(digits_onnx: Artifact, calibrated: StepContext, tmp_path: Path) -> None:
    quantized = QuantizeOrtStatic().apply(digits_onnx, QuantizeOrtStaticConfig(), tmp_path, calibrated)

    model = onnx.load(str(quantized.path))
    int8 = [init for init in model.graph.initializer if init.data_type == onnx.TensorProto.INT8]
    assert sum(int(np.prod(init.dims)) for init in int8) > 0.95 * sum(
        int(np.prod(init.dims)) for init in onnx.load(str(digits_onnx.path)).graph.initializer
    )
    scales = [init for init in model.graph.initializer if init.name.endswith("_scale") and len(init.dims) == 1]
    assert scales, "per-channel weights carry one scale per output channel"


def test_op_types_limit_what_is_quantized(digits_onnx: Artifact, calibrated: StepContext, tmp_path: Path) -> None:
    config = QuantizeOrtStaticConfig(op_types=("Gemm",), per_channel=False, activation_type="qint8")

    quantized = QuantizeOrtStatic().apply(digits_onnx, config, tmp_path, calibrated)

    assert quantized.figures["quantized_nodes"] == 2
    dequantized = {
        o for n in onnx.load(str(quantized.path)).graph.node if n.op_type == "DequantizeLinear" for o in n.output
    }
    convs = [n for n in onnx.load(str(quantized.path)).graph.node if n.op_type == "Conv"]
    assert len(convs) == 2 and not any(i in dequantized for conv in convs for i in conv.input)


def test_no_calibration_data_is_a_clear_error(
    digits_onnx: Artifact, digits_context: StepContext, tmp_path: Path
) -> None:
    with pytest.raises(BuildError, match=r"quantize\.ort_static needs calibration data, and the run passed none"):
        QuantizeOrtStatic().apply(digits_onnx, QuantizeOrtStaticConfig(), tmp_path, digits_context)


def test_calibration_data_must_feed_the_model(
    digits_onnx: Artifact, digits_context: StepContext, tmp_path: Path
) -> None:
    wrong = replace(digits_context, calibration_inputs=({"pixels": np.zeros((4, 1, 8, 8), np.float32)},))

    with pytest.raises(BuildError, match="the calibration data lacks the model input"):
        QuantizeOrtStatic().apply(digits_onnx, QuantizeOrtStaticConfig(), tmp_path, wrong)


def test_static_quantize_needs_onnx(digits_source: SourceModel, calibrated: StepContext, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"add export\.onnx before quantize\.ort_static"):
        QuantizeOrtStatic().apply(digits_source.artifact, QuantizeOrtStaticConfig(), tmp_path, calibrated)


def test_config_is_validated_and_auto_resolves() -> None:
    assert QuantizeOrtStaticConfig().reduce_range is needs_reduced_range()
    with pytest.raises(ValidationError):
        QuantizeOrtStaticConfig.model_validate({"calibrate_method": "kl"})
    with pytest.raises(ValidationError):
        QuantizeOrtStaticConfig.model_validate({"calibration_samples": 0})


def test_static_quantize_is_cached_by_build(
    digits_source: SourceModel, calibrated: StepContext, tmp_path: Path
) -> None:
    steps = (
        StepSpec(name="export.onnx"),
        StepSpec(name="quantize.ort_static", config={"calibrate_method": "percentile", "calibration_samples": 64}),
    )

    first = build(digits_source.artifact, steps, calibrated, tmp_path)
    second = build(digits_source.artifact, steps, calibrated, tmp_path)

    assert [e.cached for e in first.lineage] == [False, False] and [e.cached for e in second.lineage] == [True, True]
    assert first.content_hash == second.content_hash and second.figures["calibration_samples"] == 64
    assert second.lineage[1].config["calibrate_method"] == "percentile"


def test_other_calibration_data_is_another_build(
    digits_source: SourceModel, calibrated: StepContext, tmp_path: Path
) -> None:
    steps = (StepSpec(name="export.onnx"), StepSpec(name="quantize.ort_static", config={"calibration_samples": 64}))
    other_batches = tuple(reversed(calibrated.calibration_inputs))
    other = replace(calibrated, calibration_inputs=other_batches, calibration_digest=arrays_digest(other_batches))

    first = build(digits_source.artifact, steps, calibrated, tmp_path)
    second = build(digits_source.artifact, steps, other, tmp_path)

    # export.onnx does not read the calibration data: shared; the quantized model is calibrated anew
    assert [e.cached for e in second.lineage] == [True, False]
    assert first.figures["calibration_held_out"] == 1.0
