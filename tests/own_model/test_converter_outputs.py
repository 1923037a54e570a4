"""A classifier from a non-torch converter: outputs read by name, integer outputs compared exactly, non-tensor
outputs refused at load (workbench and server), and quantization that retries without pre-processing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("skl2onnx")

from converter_models import own_model_dir

from serving_harness.config import RuntimeSettings
from serving_harness.errors import BadInput
from serving_harness.runtimes.onnxruntime import OnnxRuntime
from workbench.artifact import Artifact, hash_path
from workbench.data.metrics import compare_outputs, resolve_metric
from workbench.errors import UsageError
from workbench.models import load_source_model
from workbench.recipe.spec import MetricSpec, ModelSpec
from workbench.steps.quantize.ort import QuantizeOrtDynamic, QuantizeOrtDynamicConfig

__all__ = ["own_model_dir"]


def _outputs(model: Path, data: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    with np.load(data) as archive:
        features, labels = archive["X"], archive["labels"]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"X": features}), strict=True)), labels


def test_accuracy_reads_the_integer_label_output_not_the_first_output(own_model_dir: Path) -> None:
    outputs, labels = _outputs(own_model_dir / "mlp.onnx", own_model_dir / "test.npz")
    assert list(outputs) == ["label", "probabilities"] and outputs["label"].dtype == np.int64

    metric = resolve_metric("accuracy", outputs, labels)  # before: argmax of 'label' → shape () vs (171,)

    assert metric.output == "label"
    assert metric.score(outputs, outputs, labels) == pytest.approx(np.mean(outputs["label"] == labels))


def test_a_named_output_chooses_what_is_scored(own_model_dir: Path) -> None:
    outputs, labels = _outputs(own_model_dir / "mlp.onnx", own_model_dir / "test.npz")
    scores = outputs["probabilities"].copy()
    scores[:, :] = 0.0
    scores[:, 3] = 1.0  # these scores always say 3; the label output is untouched
    changed = {**outputs, "probabilities": scores}

    by_scores = resolve_metric(MetricSpec(name="accuracy", output="probabilities"), outputs, labels)
    by_label = resolve_metric(MetricSpec(name="accuracy", output="label"), outputs, labels)

    assert by_scores.output == "probabilities"
    assert by_scores.score(changed, outputs, labels) == pytest.approx(np.mean(labels == 3))
    assert by_label.score(changed, outputs, labels) == pytest.approx(np.mean(outputs["label"] == labels))
    with pytest.raises(UsageError, match="no such output"):
        resolve_metric(MetricSpec(name="accuracy", output="logits"), outputs, labels)


def test_integer_outputs_are_compared_exactly() -> None:
    big = np.array([2**62 + 1, 5, 7], dtype=np.int64)  # float64 cannot tell 2**62 + 1 from 2**62
    reference = {"ids": big, "scores": np.array([0.5, 0.25, 0.125], dtype=np.float32)}
    moved = {"ids": np.array([2**62, 5, 7], dtype=np.int64), "scores": reference["scores"] + np.float32(1e-6)}

    same = compare_outputs(reference, reference)
    diffs = compare_outputs(moved, reference)

    assert same["ids"]["mismatches"] == 0 and same["ids"]["max_abs_diff"] == 0
    assert diffs["ids"]["mismatches"] == 1 and diffs["ids"]["max_abs_diff"] == 1.0
    assert "mismatches" not in diffs["scores"] and diffs["scores"]["max_abs_diff"] < 1e-5


def test_a_sequence_of_maps_output_is_refused_by_the_onnx_source(own_model_dir: Path, tmp_path: Path) -> None:
    spec = ModelSpec(source="onnx", path=str(own_model_dir / "mlp_zipmap.onnx"))

    with pytest.raises(UsageError) as refused:
        load_source_model(spec, tmp_path)

    message = str(refused.value)
    assert "'output_probability'" in message and "seq(map(int64,tensor(float)))" in message
    assert "'zipmap': False" in message and "model.options.outputs: [output_label]" in message


def test_an_outputs_selection_keeps_the_tensor_outputs(own_model_dir: Path, tmp_path: Path) -> None:
    spec = ModelSpec(source="onnx", path=str(own_model_dir / "mlp_zipmap.onnx"), options={"outputs": ["output_label"]})

    source = load_source_model(spec, tmp_path)

    assert [o.name for o in source.outputs] == ["output_label"]
    assert source.artifact.path.is_relative_to(tmp_path)  # a trimmed copy; the user's file is untouched
    session = ort.InferenceSession(str(source.artifact.path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["output_label"]


def test_the_harness_runtime_refuses_a_non_tensor_output_at_load(own_model_dir: Path) -> None:
    with pytest.raises(BadInput, match=r"output 'output_probability' is seq\(map\(int64,tensor\(float\)\)\)"):
        OnnxRuntime().load(own_model_dir / "mlp_zipmap.onnx", RuntimeSettings(name="onnxruntime"))


def test_dynamic_quantization_retries_without_preprocessing_and_records_it(
    own_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = own_model_dir / "scaled_mlp.onnx"  # ORT's shape inference stops at the converter's Scaler
    artifact = Artifact(path=path, format="onnx", content_hash=hash_path(path))
    step = QuantizeOrtDynamic()

    made = step.apply(artifact, QuantizeOrtDynamicConfig(), tmp_path / "default", None)  # type: ignore[arg-type]
    plain = step.apply(artifact, QuantizeOrtDynamicConfig(preprocess=False), tmp_path / "plain", None)  # type: ignore[arg-type]

    assert made.figures["preprocess_skipped"] == 1.0 and made.figures["quantized_nodes"] >= 1
    assert "preprocess_skipped" not in plain.figures
    assert any("without it" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    outputs, _ = _outputs(made.path, own_model_dir / "test.npz")
    assert outputs["probabilities"].shape == (171, 10)
