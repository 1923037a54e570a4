"""prune.magnitude and prune.structured: sparsity reached, a smaller dense model, fine-tune recovers, cached."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from pydantic import ValidationError

from serving_harness.config import RuntimeSettings
from serving_harness.runtimes.torch import TORCH_WEIGHTS_FILE, TorchRuntime
from workbench.artifact import Artifact
from workbench.data import Dataset
from workbench.errors import BuildError
from workbench.models import SourceModel
from workbench.models.torch_source import load_torch_model
from workbench.recipe.spec import StepSpec
from workbench.steps import (
    ExportOnnx,
    ExportOnnxConfig,
    PruneMagnitude,
    PruneMagnitudeConfig,
    PruneStructured,
    PruneStructuredConfig,
    StepContext,
)
from workbench.steps.prune import PRUNED_FACTORY, FineTuneRequest
from workbench.sweep.cache import build

FINE_TUNE = "workbench.examples.digits:fine_tune_digits"


def _logits(artifact: Artifact, dataset: Dataset) -> np.ndarray:
    """Served the way the workbench serves torch artifacts: the harness's torch runtime."""
    runtime = TorchRuntime()
    runtime.load(artifact.path, RuntimeSettings(name="torch", intra_op_threads=1))
    return runtime.infer(dataset.inputs)["logits"]


def _accuracy(artifact: Artifact, dataset: Dataset) -> float:
    return float(np.mean(_logits(artifact, dataset).argmax(axis=1) == dataset.labels))


def _weights(artifact: Artifact) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(artifact.path / TORCH_WEIGHTS_FILE, weights_only=True)
    return state


def test_magnitude_reaches_the_sparsity_it_reports_and_warns_it_is_not_faster(
    digits_source: SourceModel,
    digits_dataset: Dataset,
    digits_context: StepContext,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="workbench.steps.prune"):
        pruned = PruneMagnitude().apply(
            digits_source.artifact, PruneMagnitudeConfig(amount=0.6), tmp_path / "out", digits_context
        )

    weights = [w for name, w in _weights(pruned).items() if name.endswith("weight")]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.6, abs=0.005) and pruned.figures["sparsity"] == pytest.approx(zeros, abs=1e-4)
    assert 0.5 < pruned.figures["model_sparsity"] < 0.6  # biases are not pruned
    assert not any(name.endswith(("_orig", "_mask")) for name in _weights(pruned))  # made permanent
    assert "dense kernels do not get faster" in caplog.text
    assert _accuracy(pruned, digits_dataset) >= _accuracy(digits_source.artifact, digits_dataset) - 0.02


def test_magnitude_fine_tune_keeps_the_zeros_and_recovers_accuracy(
    digits_source: SourceModel, digits_dataset: Dataset, digits_context: StepContext, tmp_path: Path
) -> None:
    harsh = PruneMagnitudeConfig(amount=0.9)
    tuned_config = PruneMagnitudeConfig.model_validate({"amount": 0.9, "fine_tune": FINE_TUNE})

    plain = PruneMagnitude().apply(digits_source.artifact, harsh, tmp_path / "plain", digits_context)
    tuned = PruneMagnitude().apply(digits_source.artifact, tuned_config, tmp_path / "tuned", digits_context)

    assert tuned.figures["sparsity"] == pytest.approx(0.9, abs=0.005) and tuned.figures["fine_tune_s"] > 0
    assert _accuracy(tuned, digits_dataset) > _accuracy(plain, digits_dataset)
    assert _accuracy(tuned, digits_dataset) >= 0.97


def test_fine_tune_gives_the_same_weights_every_time(
    digits_source: SourceModel, digits_context: StepContext, tmp_path: Path
) -> None:
    # The digits CNN has Dropout, which draws from torch's global RNG: unseeded, each build differed.
    config = PruneMagnitudeConfig.model_validate({"amount": 0.5, "fine_tune": {"function": FINE_TUNE, "epochs": 1}})

    first = PruneMagnitude().apply(digits_source.artifact, config, tmp_path / "first", digits_context)
    torch.rand(7)  # moves the global RNG on, as anything else in the process would
    second = PruneMagnitude().apply(digits_source.artifact, config, tmp_path / "second", digits_context)

    assert all(torch.equal(w, _weights(second)[name]) for name, w in _weights(first).items())


def test_the_prune_steps_load_no_example() -> None:
    probe = "import sys, workbench.steps.prune; print(sorted(m for m in sys.modules if 'examples.' in m))"

    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)

    assert loaded.stdout.strip() == "[]"


def test_structured_gives_a_smaller_dense_model_that_serves_and_exports(
    digits_source: SourceModel, digits_dataset: Dataset, digits_context: StepContext, tmp_path: Path
) -> None:
    config = PruneStructuredConfig.model_validate({"amount": 0.5, "fine_tune": {"function": FINE_TUNE, "epochs": 3}})

    pruned = PruneStructured().apply(digits_source.artifact, config, tmp_path / "pruned", digits_context)

    figures = pruned.figures
    assert figures["params_after"] < 0.3 * figures["params_before"] and figures["params_ratio"] < 0.3
    assert figures["macs_after"] < 0.3 * figures["macs_before"]
    module = load_torch_model(pruned.path).module  # rebuilt by build_pruned from a weights_only state_dict
    assert sum(p.numel() for p in module.parameters()) == figures["params_after"]
    assert module[-1].out_features == 10  # the classifier that makes the output is never pruned
    assert _accuracy(pruned, digits_dataset) >= 0.97
    exported = ExportOnnx().apply(pruned, ExportOnnxConfig(), tmp_path / "onnx", digits_context)
    original = ExportOnnx().apply(digits_source.artifact, ExportOnnxConfig(), tmp_path / "onnx0", digits_context)
    assert exported.size_bytes < 0.35 * original.size_bytes
    assert onnx.load(str(exported.path)).graph.output[0].type.tensor_type.shape.dim[1].dim_value == 10


def test_structured_twice_is_measured_against_the_original_architecture(
    digits_source: SourceModel, digits_context: StepContext, tmp_path: Path
) -> None:
    once = PruneStructured().apply(
        digits_source.artifact, PruneStructuredConfig(amount=0.25), tmp_path / "a", digits_context
    )
    twice = PruneStructured().apply(once, PruneStructuredConfig(amount=0.25), tmp_path / "b", digits_context)

    assert twice.figures["params_before"] == once.figures["params_after"]
    assert twice.figures["params_after"] < once.figures["params_after"]
    description = (twice.path / "model.json").read_text()
    assert PRUNED_FACTORY in description and "build_digits_cnn" in description
    assert load_torch_model(twice.path).module[-1].out_features == 10


def test_fine_tune_is_called_with_the_request(
    digits_source: SourceModel, digits_context: StepContext, tmp_path: Path
) -> None:
    config = PruneMagnitudeConfig.model_validate(
        {"fine_tune": {"function": f"{__name__}:record_request", "epochs": 2, "options": {"tag": "x"}}}
    )

    PruneMagnitude().apply(digits_source.artifact, config, tmp_path / "out", digits_context)

    request, was_training, masked = CALLS[-1]
    assert request.epochs == 2 and request.options == {"tag": "x"} and request.context is digits_context
    assert was_training and masked  # called in train mode, with the pruning masks still on


CALLS: list[tuple[FineTuneRequest, bool, bool]] = []


def record_request(module: torch.nn.Module, request: FineTuneRequest) -> None:
    masked = any(name.endswith("weight_mask") for name, _ in module.named_buffers())
    CALLS.append((request, module.training, masked))


def test_bad_input_is_a_clear_error(
    digits_source: SourceModel, digits_onnx: Artifact, digits_context: StepContext, tmp_path: Path
) -> None:
    with pytest.raises(BuildError, match="prunes torch factory artifacts, not 'onnx': put it before export"):
        PruneMagnitude().apply(digits_onnx, PruneMagnitudeConfig(), tmp_path / "a", digits_context)
    with pytest.raises(BuildError, match="ignored_layers names no module 'head'"):
        config = PruneStructuredConfig(ignored_layers=("head",))
        PruneStructured().apply(digits_source.artifact, config, tmp_path / "b", digits_context)
    with pytest.raises(BuildError, match=r"fine_tune: cannot import 'workbench\.nowhere:tune'"):
        config_ft = PruneMagnitudeConfig.model_validate({"fine_tune": "workbench.nowhere:tune"})
        PruneMagnitude().apply(digits_source.artifact, config_ft, tmp_path / "c", digits_context)
    with pytest.raises(ValidationError):
        PruneMagnitudeConfig.model_validate({"amount": 1.0})
    with pytest.raises(ValidationError):
        PruneStructuredConfig.model_validate({"fine_tune": "not a function reference"})


def test_pruning_is_cached_by_build(digits_source: SourceModel, digits_context: StepContext, tmp_path: Path) -> None:
    steps = (
        StepSpec(name="prune.structured", config={"amount": 0.3}),
        StepSpec(name="prune.magnitude", config={"amount": 0.5}),
    )

    first = build(digits_source.artifact, steps, digits_context, tmp_path)
    second = build(digits_source.artifact, steps, digits_context, tmp_path)

    assert [e.cached for e in first.lineage] == [False, False] and [e.cached for e in second.lineage] == [True, True]
    assert first.content_hash == second.content_hash and second.format == "torch"
    assert second.figures["sparsity"] == pytest.approx(0.5, abs=0.01) and second.figures["params_ratio"] < 0.6
