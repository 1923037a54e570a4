"""export.onnx: one self-contained file, dynamic axes, torch's numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from workbench.artifact import Artifact
from workbench.data import Dataset
from workbench.errors import BuildError
from workbench.models import SourceModel, load_source_model
from workbench.models.torch_source import load_torch_model
from workbench.recipe.spec import ModelSpec, StepSpec
from workbench.steps import STEPS, ExportOnnx, ExportOnnxConfig, StepContext
from workbench.sweep.cache import build


def _session(artifact: Artifact) -> ort.InferenceSession:
    return ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])


def test_export_writes_one_checked_file_with_named_axes(digits_onnx: Artifact) -> None:
    assert digits_onnx.format == "onnx" and digits_onnx.path.name == "model.onnx"
    assert [p.name for p in digits_onnx.path.parent.iterdir()] == ["model.onnx"]  # no external .data
    model = onnx.load(str(digits_onnx.path), load_external_data=False)
    onnx.checker.check_model(model)
    dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (*model.graph.input, *model.graph.output)
    }
    assert dims == {"input": ["batch", 1, 8, 8], "logits": ["batch", 10]}
    assert digits_onnx.figures["export_s"] > 0 and digits_onnx.figures["export_max_abs_diff"] < 1e-4


@pytest.mark.parametrize("batch_size", [1, 7])
def test_exported_model_runs_any_batch_size(digits_onnx: Artifact, digits_dataset: Dataset, batch_size: int) -> None:
    (logits,) = _session(digits_onnx).run(None, digits_dataset.batch(0, batch_size))
    assert logits.shape == (batch_size, 10)


def test_exported_outputs_match_torch(
    digits_onnx: Artifact, digits_source: SourceModel, digits_dataset: Dataset
) -> None:
    (ours,) = _session(digits_onnx).run(None, digits_dataset.inputs)
    with torch.inference_mode():
        theirs = load_torch_model(digits_source.artifact.path).module(torch.from_numpy(digits_dataset.inputs["input"]))
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4, rtol=0)


def test_legacy_exporter_is_a_fallback(digits_source: SourceModel, digits_context: StepContext, tmp_path: Path) -> None:
    artifact = ExportOnnx().apply(
        digits_source.artifact, ExportOnnxConfig(dynamo=False, opset=17), tmp_path, digits_context
    )
    (logits,) = _session(artifact).run(None, {"input": np.zeros((3, 1, 8, 8), np.float32)})
    assert logits.shape == (3, 10) and artifact.figures["export_max_abs_diff"] < 1e-4


def test_multiple_outputs_and_a_dynamic_sequence(tiny_models: str, tmp_path: Path) -> None:
    spec = ModelSpec.model_validate(
        {
            "source": "torch",
            "factory": f"{tiny_models}:build_two_heads",
            "inputs": [{"name": "tokens", "datatype": "INT64", "shape": [-1, -1]}],
            "outputs": [
                {"name": "hidden", "datatype": "FP32", "shape": [-1, -1, 16]},
                {"name": "pooled", "datatype": "FP32", "shape": [-1, 16]},
            ],
        }
    )
    source = load_source_model(spec, tmp_path / "cache")
    context = StepContext(
        sample_inputs={"tokens": np.arange(12, dtype=np.int64).reshape(2, 6)},
        dynamic_axes=source.dynamic_axes,
        output_names=("hidden", "pooled"),
    )

    artifact = ExportOnnx().apply(source.artifact, ExportOnnxConfig(), tmp_path / "out", context)

    session = _session(artifact)
    assert [o.name for o in session.get_outputs()] == ["hidden", "pooled"]
    hidden, pooled = session.run(None, {"tokens": np.ones((3, 9), np.int64)})
    assert hidden.shape == (3, 9, 16) and pooled.shape == (3, 16)


def test_export_needs_a_torch_artifact(digits_onnx: Artifact, digits_context: StepContext, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="exports torch factory artifacts"):
        ExportOnnx().apply(digits_onnx, ExportOnnxConfig(), tmp_path, digits_context)


def test_steps_are_registered_and_cached_by_build(
    digits_source: SourceModel, digits_context: StepContext, tmp_path: Path
) -> None:
    assert {"export.onnx", "quantize.ort_dynamic"} <= set(STEPS.names())
    steps = (StepSpec(name="export.onnx", config={"dynamo": False}), StepSpec(name="quantize.ort_dynamic"))

    first = build(digits_source.artifact, steps, digits_context, tmp_path)
    second = build(digits_source.artifact, steps, digits_context, tmp_path)

    assert [e.cached for e in second.lineage] == [True, True]
    assert first.content_hash == second.content_hash and first.format == "onnx"
    assert {"export_s", "quantize_s", "size_ratio", "quantized_nodes"} <= set(second.figures)
