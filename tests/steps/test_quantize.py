"""quantize.ort_dynamic: smaller, integer ops in the graph, outputs close to fp32."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from workbench.artifact import Artifact
from workbench.data import Dataset
from workbench.data.metrics import cosine_similarity, top1_accuracy
from workbench.errors import BuildError
from workbench.models import SourceModel, load_source_model
from workbench.recipe.spec import ModelSpec
from workbench.steps import ExportOnnx, ExportOnnxConfig, QuantizeOrtDynamic, QuantizeOrtDynamicConfig, StepContext
from workbench.steps.quantize.ort import gemm_to_matmul

MLP_INPUT = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)


def _run(artifact: Artifact | Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    path = artifact.path if isinstance(artifact, Artifact) else artifact
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, inputs)[0])


def _ops(artifact: Artifact) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(artifact.path)).graph.node)


@pytest.fixture(scope="module")
def mlp_onnx(tiny_models: str, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    """An MLP whose bytes are almost all in two big Linear layers (exported as Gemm)."""
    spec = ModelSpec.model_validate(
        {
            "source": "torch",
            "factory": f"{tiny_models}:build_mlp",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
        }
    )
    root = tmp_path_factory.mktemp("mlp")
    source = load_source_model(spec, root / "cache")
    context = StepContext(
        sample_inputs={"input": MLP_INPUT[:2]}, dynamic_axes=source.dynamic_axes, output_names=("logits",)
    )
    return ExportOnnx().apply(source.artifact, ExportOnnxConfig(), root / "out", context)


def test_quantized_mlp_is_smaller_integer_and_close(
    mlp_onnx: Artifact, digits_context: StepContext, tmp_path: Path
) -> None:
    assert _ops(mlp_onnx)["Gemm"] == 3

    quantized = QuantizeOrtDynamic().apply(mlp_onnx, QuantizeOrtDynamicConfig(), tmp_path, digits_context)

    ops = _ops(quantized)
    assert ops["MatMulInteger"] == 3 and ops["DynamicQuantizeLinear"] >= 1 and ops["Gemm"] == 0
    assert quantized.figures["quantized_nodes"] == 3
    assert quantized.figures["size_ratio"] < 0.3 and quantized.size_bytes < 0.3 * mlp_onnx.size_bytes
    ours, theirs = _run(quantized, {"input": MLP_INPUT}), _run(mlp_onnx, {"input": MLP_INPUT})
    # Without reduce_range on a CPU lacking VNNI this falls to ~0.98 (u8×s8 saturation): 'auto' guards it.
    assert cosine_similarity({"y": ours}, {"y": theirs}, None) > 0.999
    assert np.max(np.abs(ours - theirs)) < 0.05 * np.max(np.abs(theirs))


def test_reduce_range_auto_resolves_to_this_cpu() -> None:
    from workbench.steps.quantize.ort import needs_reduced_range

    assert QuantizeOrtDynamicConfig().reduce_range is needs_reduced_range()
    assert QuantizeOrtDynamicConfig(reduce_range=False).reduce_range is False
    with pytest.raises(ValidationError):
        QuantizeOrtDynamicConfig(reduce_range="sometimes")  # type: ignore[arg-type]


def test_digits_int8_keeps_accuracy_and_leaves_conv_alone_by_default(
    digits_onnx: Artifact, digits_dataset: Dataset, digits_context: StepContext, tmp_path: Path
) -> None:
    quantized = QuantizeOrtDynamic().apply(digits_onnx, QuantizeOrtDynamicConfig(), tmp_path, digits_context)

    ops = _ops(quantized)
    assert ops["ConvInteger"] == 0 and ops["Conv"] == 2 and ops["MatMulInteger"] == 2
    reference = _run(digits_onnx, digits_dataset.inputs)
    accuracy = top1_accuracy({"logits": _run(quantized, digits_dataset.inputs)}, {}, digits_dataset.labels)
    assert accuracy >= top1_accuracy({"logits": reference}, {}, digits_dataset.labels) - 0.01


def test_conv_is_quantized_when_asked(digits_onnx: Artifact, digits_context: StepContext, tmp_path: Path) -> None:
    config = QuantizeOrtDynamicConfig(op_types=("Conv",), per_channel=False, weight_type="quint8", preprocess=False)
    quantized = QuantizeOrtDynamic().apply(digits_onnx, config, tmp_path, digits_context)
    ops = _ops(quantized)
    assert ops["ConvInteger"] == 2 and ops["MatMulInteger"] == 0 and quantized.figures["quantized_nodes"] == 2


def test_quantize_rejects_a_torch_artifact(
    digits_source: SourceModel, digits_context: StepContext, tmp_path: Path
) -> None:
    with pytest.raises(BuildError, match=r"add export\.onnx before quantize\.ort_dynamic"):
        QuantizeOrtDynamic().apply(digits_source.artifact, QuantizeOrtDynamicConfig(), tmp_path, digits_context)


def test_nothing_to_quantize_is_an_error(mlp_onnx: Artifact, digits_context: StepContext, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no Conv nodes"):
        QuantizeOrtDynamic().apply(mlp_onnx, QuantizeOrtDynamicConfig(op_types=("Conv",)), tmp_path, digits_context)


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError):
        QuantizeOrtDynamicConfig.model_validate({"weight_type": "int4"})
    with pytest.raises(ValidationError):
        QuantizeOrtDynamicConfig.model_validate({"per_chanel": True})
    assert QuantizeOrtDynamicConfig.model_validate({"op_types": ["MatMul"]}).op_types == ("MatMul",)


def test_gemm_rewrite_keeps_the_numbers(mlp_onnx: Artifact, tmp_path: Path) -> None:
    model = onnx.load(str(mlp_onnx.path))
    rewritten = gemm_to_matmul(model.graph)
    path = tmp_path / "rewritten.onnx"
    onnx.save(model, str(path))

    assert len(rewritten) == 3 and not any(n.op_type == "Gemm" for n in model.graph.node)
    np.testing.assert_allclose(_run(path, {"input": MLP_INPUT}), _run(mlp_onnx, {"input": MLP_INPUT}), atol=1e-5)
    assert path.stat().st_size < 1.05 * mlp_onnx.size_bytes  # the transposed weights replace the originals
