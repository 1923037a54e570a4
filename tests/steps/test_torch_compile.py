"""compile.torch (compile options the runtime applies, compile time and inductor cache state as figures) and
compile.tensorrt (a clear one-line refusal without CUDA; a real build where there is one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from serving_harness.config import RuntimeSettings
from serving_harness.runtimes.torch import TorchRuntime
from workbench.artifact import Artifact
from workbench.errors import BuildError, MissingDependencyError, RecipeError
from workbench.models import SourceModel, load_source_model
from workbench.recipe.spec import ModelSpec, StepSpec
from workbench.steps import (
    CompileTensorRT,
    CompileTensorRTConfig,
    CompileTorch,
    CompileTorchConfig,
    ExportTorchScript,
    ExportTorchScriptConfig,
    StepContext,
)
from workbench.sweep.cache import build, validate_step

MLP_INPUT = np.random.default_rng(1).standard_normal((16, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def mlp_source(tiny_models: str, tmp_path_factory: pytest.TempPathFactory) -> SourceModel:
    spec = ModelSpec.model_validate(
        {
            "source": "torch",
            "factory": f"{tiny_models}:build_mlp",
            "kwargs": {"width": 64},
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


def _serve(artifact: Artifact) -> tuple[TorchRuntime, str]:
    runtime = TorchRuntime()
    metadata = runtime.load(artifact.path, RuntimeSettings(name="torch", intra_op_threads=1))
    return runtime, metadata.platform


@pytest.mark.slow  # one cold torch.compile: 15-30 s on a shared 2-core machine
def test_compile_records_its_cost_and_cache_state_and_serves(
    mlp_source: SourceModel, mlp_context: StepContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # cold: nothing compiled yet
    steps = (StepSpec(name="compile.torch", config={"mode": "default"}),)

    cold = build(mlp_source.artifact, steps, mlp_context, tmp_path / "cache")
    again = build(mlp_source.artifact, steps, mlp_context, tmp_path / "cache")
    warm = CompileTorch().apply(mlp_source.artifact, CompileTorchConfig(), tmp_path / "warm", mlp_context)

    assert cold.format == "torch_compiled" and [e.cached for e in again.lineage] == [True]
    assert cold.figures["cache_warm"] == 0 and cold.figures["cache_misses"] >= 1 and cold.figures["compile_s"] > 0
    assert warm.figures["cache_warm"] == 1 and warm.figures["cache_misses"] == 0
    assert cold.figures["compile_max_abs_diff"] < 1e-5
    described = json.loads((cold.path / "model.json").read_text())
    assert described["compile"] == {"mode": "default", "dynamic": True, "fullgraph": False}
    parent_weights = (mlp_source.artifact.path / "weights.pt").stat()
    assert (cold.path / "weights.pt").stat().st_ino == parent_weights.st_ino  # linked, not copied
    assert "compile" not in json.loads((mlp_source.artifact.path / "model.json").read_text())

    runtime, platform = _serve(cold)
    eager, _ = _serve(mlp_source.artifact)
    assert platform == "pytorch_eager_compiled"
    for batch_size in (1, 5, 16):  # the batch axis is dynamic: no shape is special
        batch = {"input": MLP_INPUT[:batch_size]}
        np.testing.assert_allclose(runtime.infer(batch)["logits"], eager.infer(batch)["logits"], atol=1e-5)


def test_compile_takes_eager_or_exported_programs_only(
    mlp_source: SourceModel, mlp_context: StepContext, tmp_path: Path
) -> None:
    scripted = ExportTorchScript().apply(mlp_source.artifact, ExportTorchScriptConfig(), tmp_path / "ts", mlp_context)

    with pytest.raises(BuildError, match=r"compile.torch takes a torch factory artifact or an ExportedProgram"):
        CompileTorch().apply(scripted, CompileTorchConfig(), tmp_path / "out", mlp_context)


def test_compile_modes_are_validated() -> None:
    config = validate_step(StepSpec(name="compile.torch", config={"mode": "max-autotune"}), where="steps[0]")
    assert isinstance(config, CompileTorchConfig) and config.dynamic

    with pytest.raises(RecipeError, match=r"steps\[0\]\.mode"):
        validate_step(StepSpec(name="compile.torch", config={"mode": "fastest"}), where="steps[0]")


def test_tensorrt_config_is_validated() -> None:
    config = validate_step(StepSpec(name="compile.tensorrt", config={"max_batch_size": 64}), where="s")
    assert isinstance(config, CompileTensorRTConfig) and config.precision == "fp16"

    with pytest.raises(RecipeError, match="opt_batch_size 64 is above max_batch_size 8"):
        validate_step(StepSpec(name="compile.tensorrt", config={"max_batch_size": 8, "opt_batch_size": 64}), where="s")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_tensorrt_without_cuda_fails_in_one_line_saying_where_to_run(
    mlp_source: SourceModel, mlp_context: StepContext, tmp_path: Path
) -> None:
    steps = (StepSpec(name="compile.tensorrt"),)

    with pytest.raises(MissingDependencyError) as caught:
        build(mlp_source.artifact, steps, mlp_context, tmp_path)

    message = str(caught.value)
    assert "\n" not in message and message.startswith("compile.tensorrt needs a CUDA GPU")
    assert "GPU machine" in message
    assert not list((tmp_path / "artifacts").rglob("model.json"))  # nothing half-built left in the cache


@pytest.mark.gpu
def test_tensorrt_builds_an_engine_that_matches_eager(
    mlp_source: SourceModel, mlp_context: StepContext, tmp_path: Path
) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("torch_tensorrt")
    config = CompileTensorRTConfig(precision="fp32", max_batch_size=16)

    artifact = CompileTensorRT().apply(mlp_source.artifact, config, tmp_path, mlp_context)

    runtime = TorchRuntime()
    runtime.load(artifact.path, RuntimeSettings(name="torch", device="cuda"))
    eager, _ = _serve(mlp_source.artifact)
    batch = {"input": MLP_INPUT[:7]}
    np.testing.assert_allclose(runtime.infer(batch)["logits"], eager.infer(batch)["logits"], atol=1e-3)
    assert artifact.format == "torch_tensorrt" and artifact.figures["compile_s"] > 0
