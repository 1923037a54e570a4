"""export.torchscript and export.torch_export: files that load without the factory, torch's numbers, any batch."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from serving_harness.config import RuntimeSettings
from serving_harness.runtimes.torch import TorchRuntime
from workbench.artifact import Artifact
from workbench.data import Dataset
from workbench.errors import BuildError
from workbench.models import SourceModel
from workbench.models.torch_source import load_torch_model
from workbench.recipe.spec import StepSpec
from workbench.steps import (
    STEPS,
    ExportTorchExport,
    ExportTorchExportConfig,
    ExportTorchScript,
    ExportTorchScriptConfig,
    StepContext,
)
from workbench.sweep.cache import build


class BatchFrozen(torch.nn.Module):
    """Turns the batch size into a Python int: the tracer records it as a constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = int(x.shape[0])
        return x.reshape(rows, 2, 2).sum(-1).reshape(rows, 2)


def build_batch_frozen() -> torch.nn.Module:
    return BatchFrozen()


def _eager_logits(source: SourceModel, inputs: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return np.asarray(load_torch_model(source.artifact.path).module(torch.from_numpy(inputs)).numpy())


def _serve(artifact: Artifact) -> TorchRuntime:
    runtime = TorchRuntime()
    runtime.load(artifact.path, RuntimeSettings(name="torch", intra_op_threads=1))
    return runtime


@pytest.fixture(scope="module")
def digits_torchscript(
    digits_source: SourceModel, digits_context: StepContext, tmp_path_factory: pytest.TempPathFactory
) -> Artifact:
    workdir = tmp_path_factory.mktemp("digits-ts")
    return ExportTorchScript().apply(digits_source.artifact, ExportTorchScriptConfig(), workdir, digits_context)


@pytest.fixture(scope="module")
def digits_exported(
    digits_source: SourceModel, digits_context: StepContext, tmp_path_factory: pytest.TempPathFactory
) -> Artifact:
    workdir = tmp_path_factory.mktemp("digits-ep")
    return ExportTorchExport().apply(digits_source.artifact, ExportTorchExportConfig(), workdir, digits_context)


def test_torchscript_is_a_frozen_archive_with_its_schema(digits_torchscript: Artifact) -> None:
    directory = digits_torchscript.path
    assert digits_torchscript.format == "torchscript"
    assert sorted(p.name for p in directory.iterdir()) == ["model.json", "model.pt"]
    description = json.loads((directory / "model.json").read_text())
    assert description["format"] == "torchscript" and "factory" not in description
    assert [s["name"] for s in description["inputs"]] == ["input"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(directory / "model.pt"))  # type: ignore[no-untyped-call]
    assert not hasattr(loaded, "training") or not loaded.training
    assert not list(loaded.named_parameters())  # frozen: the weights are constants of the graph
    assert digits_torchscript.figures["export_s"] > 0
    assert digits_torchscript.figures["export_max_abs_diff"] < 1e-5


def test_exported_program_loads_with_torch_export(digits_exported: Artifact) -> None:
    directory = digits_exported.path
    assert digits_exported.format == "torch_export"
    assert sorted(p.name for p in directory.iterdir()) == ["model.json", "model.pt2"]
    program = torch.export.load(directory / "model.pt2")
    (batch_dim,) = [str(d) for d in program.range_constraints]  # one symbolic size: the batch axis
    with torch.inference_mode():
        assert program.module()(torch.zeros(5, 1, 8, 8)).shape == (5, 10)
    assert batch_dim and digits_exported.figures["export_max_abs_diff"] < 1e-5


@pytest.mark.parametrize("which", ["digits_torchscript", "digits_exported"])
@pytest.mark.parametrize("batch_size", [1, 32])
def test_served_outputs_match_eager_at_any_batch(
    which: str,
    batch_size: int,
    request: pytest.FixtureRequest,
    digits_source: SourceModel,
    digits_dataset: Dataset,
) -> None:
    artifact: Artifact = request.getfixturevalue(which)
    batch = digits_dataset.batch(0, batch_size)

    (logits,) = _serve(artifact).infer(batch).values()

    np.testing.assert_allclose(logits, _eager_logits(digits_source, batch["input"]), atol=1e-5, rtol=0)


def test_a_trace_that_does_not_generalise_fails_the_build(tmp_path: Path) -> None:
    """A model whose shape logic the tracer freezes (a Python int from the batch) must not pass silently."""
    from workbench.models import load_source_model
    from workbench.recipe.spec import ModelSpec

    spec = ModelSpec.model_validate(
        {
            "source": "torch",
            "factory": f"{__name__}:build_batch_frozen",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        }
    )
    source = load_source_model(spec, tmp_path / "cache")
    context = StepContext(
        sample_inputs={"input": np.ones((2, 4), np.float32)}, dynamic_axes=source.dynamic_axes, output_names=()
    )

    with pytest.raises(BuildError, match=r"export\.torchscript: the saved model fails on inputs of shape \(3, 4\)"):
        ExportTorchScript().apply(source.artifact, ExportTorchScriptConfig(), tmp_path / "out", context)


def test_exports_need_a_torch_factory_artifact(
    digits_torchscript: Artifact, digits_context: StepContext, tmp_path: Path
) -> None:
    with pytest.raises(BuildError, match="takes a torch factory artifact, not 'torchscript'"):
        ExportTorchExport().apply(digits_torchscript, ExportTorchExportConfig(), tmp_path, digits_context)


def test_exports_are_registered_and_cached_by_build(
    digits_source: SourceModel, digits_context: StepContext, tmp_path: Path
) -> None:
    assert {"export.torchscript", "export.torch_export"} <= set(STEPS.names())
    steps = (StepSpec(name="export.torchscript", config={"freeze": True}),)

    first = build(digits_source.artifact, steps, digits_context, tmp_path)
    second = build(digits_source.artifact, steps, digits_context, tmp_path)

    assert [e.cached for e in first.lineage] == [False] and [e.cached for e in second.lineage] == [True]
    assert first.content_hash == second.content_hash and second.format == "torchscript"
    assert (second.path / "model.pt").is_file() and "export_max_abs_diff" in second.figures
