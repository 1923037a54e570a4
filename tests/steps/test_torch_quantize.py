"""quantize.torch_dynamic (int8 Linear ops in a TorchScript graph) and quantize.fp16 (ISA check, ONNX and torch)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from serving_harness.config import RuntimeSettings
from serving_harness.runtimes.onnxruntime import OnnxRuntime
from serving_harness.runtimes.torch import TorchRuntime
from workbench.artifact import Artifact
from workbench.data import Dataset
from workbench.data.metrics import cosine_similarity, top1_accuracy
from workbench.errors import BuildError, MissingDependencyError, RecipeError
from workbench.host import cpu_flags
from workbench.models import SourceModel, load_source_model
from workbench.recipe.spec import ModelSpec, StepSpec
from workbench.steps import (
    QuantizeFp16,
    QuantizeFp16Config,
    QuantizeTorchDynamic,
    QuantizeTorchDynamicConfig,
    StepContext,
)
from workbench.steps.quantize.torch import NATIVE_ISA, require_native_isa
from workbench.sweep.cache import build, validate_step

MLP_INPUT = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
HAS_NATIVE_HALF = bool(cpu_flags() & {*NATIVE_ISA["x86"]["float16"], *NATIVE_ISA["arm"]["float16"]})


def _serve(artifact: Artifact) -> TorchRuntime:
    runtime = TorchRuntime()
    runtime.load(artifact.path, RuntimeSettings(name="torch", intra_op_threads=1))
    return runtime


def _logits(runtime: TorchRuntime | OnnxRuntime, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return next(iter(runtime.infer(inputs).values()))


def _jit_load(path: Path) -> Any:
    """A TorchScript module (typed Any: torch's stubs lack Graph.findAllNodes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path))  # type: ignore[no-untyped-call]


def _constant_tensors(path: Path) -> list[torch.Tensor]:
    """The tensors a frozen TorchScript graph holds as constants (its weights)."""
    module = _jit_load(path)  # the graph's constants live as long as the module
    nodes = module.graph.findAllNodes("prim::Constant")
    return [n.output().toIValue().clone() for n in nodes if n.output().type().kind() == "TensorType"]


@pytest.fixture(scope="module")
def mlp_source(tiny_models: str, tmp_path_factory: pytest.TempPathFactory) -> SourceModel:
    """An MLP with three Linear layers holding almost all of its bytes."""
    spec = ModelSpec.model_validate(
        {
            "source": "torch",
            "factory": f"{tiny_models}:build_mlp",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
        }
    )
    return load_source_model(spec, tmp_path_factory.mktemp("mlp") / "cache")


@pytest.fixture(scope="module")
def mlp_context(mlp_source: SourceModel) -> StepContext:
    return StepContext(
        sample_inputs={"input": MLP_INPUT[:2]}, dynamic_axes=mlp_source.dynamic_axes, output_names=("logits",)
    )


@pytest.fixture(scope="module")
def mlp_int8(mlp_source: SourceModel, mlp_context: StepContext, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    workdir = tmp_path_factory.mktemp("mlp-int8")
    return QuantizeTorchDynamic().apply(mlp_source.artifact, QuantizeTorchDynamicConfig(), workdir, mlp_context)


def test_dynamic_int8_is_a_smaller_torchscript_with_int8_linear_ops(mlp_int8: Artifact) -> None:
    assert mlp_int8.format == "torchscript"
    graph = _jit_load(mlp_int8.path / "model.pt").graph
    assert len(graph.findAllNodes("quantized::linear_dynamic")) == 3
    assert not graph.findAllNodes("aten::linear")  # no Linear left in fp32
    assert mlp_int8.figures["quantized_ops"] == 3
    assert mlp_int8.figures["size_ratio"] < 0.4  # int8 weights: about a quarter of the fp32 bytes


def test_dynamic_int8_outputs_stay_close_to_fp32(mlp_int8: Artifact, mlp_source: SourceModel) -> None:
    inputs = {"input": MLP_INPUT}
    fp32 = _logits(_serve(Artifact(path=mlp_source.artifact.path, format="torch")), inputs)

    int8 = _logits(_serve(mlp_int8), inputs)

    assert int8.shape == (64, 10)
    assert cosine_similarity({"y": int8}, {"y": fp32}, None) > 0.999
    assert np.max(np.abs(int8 - fp32)) < 0.05 * np.max(np.abs(fp32))
    assert 0 < mlp_int8.figures["quantize_max_abs_diff"] < 0.05 * np.max(np.abs(fp32))


def test_skip_leaves_matching_linear_layers_in_fp32(
    mlp_source: SourceModel, mlp_context: StepContext, tmp_path: Path
) -> None:
    config = QuantizeTorchDynamicConfig(skip=("4",))  # nn.Sequential names its last Linear "4"

    artifact = QuantizeTorchDynamic().apply(mlp_source.artifact, config, tmp_path, mlp_context)

    graph = _jit_load(artifact.path / "model.pt").graph
    assert len(graph.findAllNodes("quantized::linear_dynamic")) == 2
    assert len(graph.findAllNodes("aten::linear")) == 1


def test_skipping_every_layer_is_a_clear_error(
    mlp_source: SourceModel, mlp_context: StepContext, tmp_path: Path
) -> None:
    with pytest.raises(BuildError, match=r"no nn\.Linear layers to quantize"):
        QuantizeTorchDynamic().apply(
            mlp_source.artifact, QuantizeTorchDynamicConfig(skip=("*",)), tmp_path, mlp_context
        )


def test_reduce_range_auto_is_resolved_into_the_cache_key() -> None:
    config = validate_step(StepSpec(name="quantize.torch_dynamic"), where="steps[0]")

    assert isinstance(config, QuantizeTorchDynamicConfig)
    assert config.reduce_range in {"weights", "none"}


def test_digits_int8_keeps_accuracy_and_is_cached(
    digits_source: SourceModel, digits_context: StepContext, digits_dataset: Dataset, tmp_path: Path
) -> None:
    steps = (StepSpec(name="quantize.torch_dynamic"),)

    first = build(digits_source.artifact, steps, digits_context, tmp_path)
    second = build(digits_source.artifact, steps, digits_context, tmp_path)

    assert [e.cached for e in second.lineage] == [True] and first.content_hash == second.content_hash
    assert second.figures["quantized_ops"] == 2  # the two Linear layers; the convolutions stay fp32
    fp32 = _logits(_serve(digits_source.artifact), digits_dataset.inputs)
    int8 = _logits(_serve(second), digits_dataset.inputs)
    labels = digits_dataset.labels
    assert top1_accuracy({"logits": int8}, {}, labels) >= top1_accuracy({"logits": fp32}, {}, labels) - 0.01


@pytest.mark.skipif(HAS_NATIVE_HALF, reason="this CPU has native float16")
def test_fp16_on_a_cpu_without_native_half_is_refused_in_one_line(
    mlp_source: SourceModel, mlp_context: StepContext, tmp_path: Path
) -> None:
    with pytest.raises(MissingDependencyError) as caught:
        QuantizeFp16().apply(mlp_source.artifact, QuantizeFp16Config(), tmp_path, mlp_context)

    message = str(caught.value)
    assert "\n" not in message and "float16 runs slower than float32 here" in message
    assert "lacks avx512_fp16/amx_fp16" in message or "lacks asimdhp" in message
    assert "device: cuda" in message and "allow_slow: true" in message


@pytest.mark.skipif(HAS_NATIVE_HALF, reason="this CPU has native float16")
def test_onnx_fp16_refusal_says_ort_would_fall_back_to_float32(
    digits_onnx: Artifact, digits_context: StepContext, tmp_path: Path
) -> None:
    with pytest.raises(MissingDependencyError, match="compute it in float32 behind casts"):
        QuantizeFp16().apply(digits_onnx, QuantizeFp16Config(), tmp_path, digits_context)


def test_native_isa_check_names_the_bfloat16_flags() -> None:
    if cpu_flags() & {*NATIVE_ISA["x86"]["bfloat16"], *NATIVE_ISA["arm"]["bfloat16"]}:
        require_native_isa("bfloat16")  # passes quietly where the CPU has it
        return
    with pytest.raises(MissingDependencyError, match="bfloat16 runs slower than float32"):
        require_native_isa("bfloat16")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_torch_half_keeps_float32_io_and_close_outputs(
    dtype: str, mlp_source: SourceModel, mlp_context: StepContext, tmp_path: Path
) -> None:
    config = QuantizeFp16Config(dtype=dtype, allow_slow=True)  # type: ignore[arg-type]

    artifact = QuantizeFp16().apply(mlp_source.artifact, config, tmp_path, mlp_context)

    assert artifact.format == "torchscript"
    described = json.loads((artifact.path / "model.json").read_text())
    assert [s["datatype"] for s in (*described["inputs"], *described["outputs"])] == ["FP32", "FP32"]
    weights = [t for t in _constant_tensors(artifact.path / "model.pt") if t.dim() == 2]
    assert len(weights) == 3 and {t.dtype for t in weights} == {getattr(torch, dtype)}
    half = _logits(_serve(artifact), {"input": MLP_INPUT})
    fp32 = _logits(_serve(mlp_source.artifact), {"input": MLP_INPUT})
    assert half.dtype == np.float32
    tolerance = 0.05 if dtype == "bfloat16" else 0.01  # bfloat16 keeps 8 mantissa bits, float16 11
    assert np.max(np.abs(half - fp32)) < tolerance * np.max(np.abs(fp32))
    assert artifact.figures["size_ratio"] < 0.6 and "cast_max_abs_diff" in artifact.figures


def test_torch_fp16_without_kept_io_types_declares_fp16(
    mlp_source: SourceModel, mlp_context: StepContext, tmp_path: Path
) -> None:
    config = QuantizeFp16Config(keep_io_types=False, allow_slow=True)

    artifact = QuantizeFp16().apply(mlp_source.artifact, config, tmp_path, mlp_context)

    runtime = TorchRuntime()
    metadata = runtime.load(artifact.path, RuntimeSettings(name="torch"))
    assert [s.datatype for s in (*metadata.inputs, *metadata.outputs)] == ["FP16", "FP16"]
    assert _logits(runtime, {"input": MLP_INPUT.astype(np.float16)}).dtype == np.float16


def test_onnx_fp16_halves_the_file_and_keeps_float32_io(
    digits_onnx: Artifact, digits_context: StepContext, digits_dataset: Dataset, tmp_path: Path
) -> None:
    artifact = QuantizeFp16().apply(digits_onnx, QuantizeFp16Config(allow_slow=True), tmp_path, digits_context)

    model = onnx.load(str(artifact.path))
    stored = {init.data_type for init in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in stored and onnx.TensorProto.FLOAT not in stored
    io_types = {v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)}
    assert io_types == {onnx.TensorProto.FLOAT}
    assert artifact.figures["size_ratio"] < 0.6
    runtimes = []
    for path in (digits_onnx.path, artifact.path):
        runtime = OnnxRuntime()
        runtime.load(path, RuntimeSettings())
        runtimes.append(runtime)
    fp32, fp16 = (_logits(r, digits_dataset.inputs) for r in runtimes)
    assert np.max(np.abs(fp16 - fp32)) < 0.01 * np.max(np.abs(fp32))


def test_fp16_refuses_what_it_cannot_do(digits_onnx: Artifact, digits_context: StepContext, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="ONNX conversion supports float16 only"):
        QuantizeFp16().apply(
            digits_onnx, QuantizeFp16Config(dtype="bfloat16", allow_slow=True), tmp_path, digits_context
        )
    with pytest.raises(RecipeError, match="bfloat16 needs keep_io_types: true"):
        validate_step(StepSpec(name="quantize.fp16", config={"dtype": "bfloat16", "keep_io_types": False}), where="s")
