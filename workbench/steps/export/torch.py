"""Torch export steps: a torch factory artifact → TorchScript (``export.torchscript``) or an ExportedProgram
(``export.torch_export``), each a directory that ``serving_harness.runtimes.torch`` serves.

Also the helpers the other torch steps share: reading sample tensors, writing a torch artifact's
``model.json``, and checking an artifact by loading it back through the serving runtime.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from serving_harness.config import RuntimeSettings
from serving_harness.runtimes.base import TensorSpec
from serving_harness.runtimes.torch import (
    EXPORT_FORMAT,
    TORCH_MODEL_FILE,
    TORCHSCRIPT_FORMAT,
    TorchRuntime,
)
from workbench.artifact import Artifact
from workbench.errors import BuildError
from workbench.models.torch_source import TorchModel, load_torch_model
from workbench.steps.base import STEPS, StepConfig, StepContext, expect_config

logger = logging.getLogger(__name__)

MODEL_DIR = "model"  # the artifact directory under the step's workdir
TORCHSCRIPT_FILE = "model.pt"
EXPORT_FILE = "model.pt2"


class ExportTorchScriptConfig(StepConfig):
    """``export.torchscript`` settings.

    Example::

        - export.torchscript: {freeze: true}
    """

    freeze: bool = Field(default=True, description="torch.jit.freeze: inline weights and attributes as constants.")
    optimize: bool = Field(default=False, description="Also run torch.jit.optimize_for_inference (implies freeze).")
    tolerance: float = Field(default=1e-4, gt=0, description="Largest output difference from eager that passes.")


class ExportTorchExportConfig(StepConfig):
    """``export.torch_export`` settings.

    Example::

        - export.torch_export: {strict: false}
    """

    strict: bool = Field(default=False, description="Trace with TorchDynamo (strict) instead of the Python tracer.")
    tolerance: float = Field(default=1e-4, gt=0, description="Largest output difference from eager that passes.")


@STEPS.register("export.torchscript")
class ExportTorchScript:
    """Trace a torch factory artifact with ``torch.jit.trace`` and freeze it; save it with ``torch.jit.save``.

    The artifact is a directory (``model.json`` + ``model.pt``) loaded with ``torch.jit.load``: code and
    tensors, no pickled Python objects, and no need for the factory's package where it is served. Tracing
    records one path through the model, so the step runs the saved file on the sample batch, on a bigger
    batch and (where the schema has one) a shorter sequence, and fails if it drifts from eager beyond
    ``tolerance``. Figures: ``export_s``, ``export_max_abs_diff``.
    """

    name: ClassVar[str] = "export.torchscript"
    Config: ClassVar[type[StepConfig]] = ExportTorchScriptConfig

    def apply(self, artifact: Artifact, config: StepConfig, workdir: Path, context: StepContext) -> Artifact:
        """Write ``workdir/model/`` (``model.json``, ``model.pt``)."""
        config = expect_config(self.name, config, ExportTorchScriptConfig)
        model = load_eager(self.name, artifact)
        samples = sample_tensors(model.inputs, context)
        started = time.perf_counter()
        scripted = trace_module(model.module, samples, freeze=config.freeze or config.optimize)
        if config.optimize:
            scripted = torch.jit.optimize_for_inference(scripted)
        directory = workdir / MODEL_DIR
        directory.mkdir(parents=True)
        save_torchscript(scripted, directory, model.inputs, model.outputs)
        export_s = time.perf_counter() - started
        diff = check_parity(directory, model, samples, tolerance=config.tolerance, what=self.name)
        return Artifact(
            path=directory, format="torchscript", figures={"export_s": round(export_s, 3), "export_max_abs_diff": diff}
        )


@STEPS.register("export.torch_export")
class ExportTorchExport:
    """``torch.export`` a torch factory artifact (dynamic batch axis, and every other -1 axis of the schema)
    and save the ExportedProgram with ``torch.export.save``.

    The artifact is a directory (``model.json`` + ``model.pt2``) loaded with ``torch.export.load``. Figures:
    ``export_s``, ``export_max_abs_diff`` (checked on the sample batch, a bigger batch and a shorter sequence).
    """

    name: ClassVar[str] = "export.torch_export"
    Config: ClassVar[type[StepConfig]] = ExportTorchExportConfig

    def apply(self, artifact: Artifact, config: StepConfig, workdir: Path, context: StepContext) -> Artifact:
        """Write ``workdir/model/`` (``model.json``, ``model.pt2``)."""
        config = expect_config(self.name, config, ExportTorchExportConfig)
        model = load_eager(self.name, artifact)
        samples = sample_tensors(model.inputs, context)
        started = time.perf_counter()
        program = _export_program(model, samples, strict=config.strict)
        directory = workdir / MODEL_DIR
        directory.mkdir(parents=True)
        torch.export.save(program, directory / EXPORT_FILE)
        write_description(directory, EXPORT_FORMAT, EXPORT_FILE, model.inputs, model.outputs)
        export_s = time.perf_counter() - started
        diff = check_parity(directory, model, samples, tolerance=config.tolerance, what=self.name)
        return Artifact(
            path=directory, format="torch_export", figures={"export_s": round(export_s, 3), "export_max_abs_diff": diff}
        )


def _export_program(model: TorchModel, samples: tuple[torch.Tensor, ...], *, strict: bool) -> Any:
    # Dim.DYNAMIC lets torch.export find each axis's range itself (batch 1 still runs).
    shapes = tuple(
        {axis: torch.export.Dim.DYNAMIC for axis, size in enumerate(spec.shape) if axis == 0 or size == -1}
        for spec in model.inputs
    )
    try:
        with quiet_torch():
            return torch.export.export(model.module, samples, dynamic_shapes=shapes, strict=strict)
    except Exception as exc:
        raise BuildError(f"torch.export failed: {type(exc).__name__}: {first_line(exc)}") from exc


def load_eager(step: str, artifact: Artifact) -> TorchModel:
    """The torch factory artifact's module; a BuildError naming the step for any other format."""
    if artifact.format != "torch":
        raise BuildError(
            f"{step} takes a torch factory artifact, not {artifact.format!r}: put it first in the pipeline"
        )
    return load_torch_model(artifact.path)


def sample_tensors(specs: Sequence[TensorSpec], context: StepContext) -> tuple[torch.Tensor, ...]:
    """The context's sample batch as tensors, in the schema's input order."""
    missing = [spec.name for spec in specs if spec.name not in context.sample_inputs]
    if missing:
        raise BuildError(f"the sample inputs lack {', '.join(missing)}")
    return tuple(torch.from_numpy(np.array(context.sample_inputs[spec.name], order="C")) for spec in specs)


def trace_module(module: torch.nn.Module, samples: tuple[torch.Tensor, ...], *, freeze: bool) -> Any:
    """``torch.jit.trace`` (and ``torch.jit.freeze``) with the tracer's warnings logged, not shown."""
    try:
        with quiet_torch() as caught, torch.no_grad():
            scripted = torch.jit.trace(  # type: ignore[no-untyped-call]
                module.eval(), samples, strict=False, check_trace=False
            )
            if freeze:
                scripted = torch.jit.freeze(scripted.eval())
    except Exception as exc:
        raise BuildError(f"torch.jit.trace failed: {type(exc).__name__}: {first_line(exc)}") from exc
    for warning in caught:
        logger.debug("tracer: %s", warning.message)
    return scripted


def save_torchscript(
    scripted: Any, directory: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]
) -> None:
    """Write ``model.pt`` and its ``model.json`` into ``directory``."""
    with quiet_torch():
        torch.jit.save(scripted, str(directory / TORCHSCRIPT_FILE))
    write_description(directory, TORCHSCRIPT_FORMAT, TORCHSCRIPT_FILE, inputs, outputs)


def write_description(
    directory: Path,
    format_tag: str,
    file: str,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    **extra: Any,
) -> None:
    """Write the ``model.json`` that tells the torch runtime how to load ``file``."""
    description = {
        "format": format_tag,
        "file": file,
        "inputs": [spec.model_dump(mode="json") for spec in inputs],
        "outputs": [spec.model_dump(mode="json") for spec in outputs],
        **extra,
    }
    (directory / TORCH_MODEL_FILE).write_text(json.dumps(description, indent=2, sort_keys=True))


def check_parity(
    directory: Path,
    model: TorchModel,
    samples: tuple[torch.Tensor, ...],
    *,
    tolerance: float | None,
    what: str,
) -> float:
    """Load ``directory`` with the serving runtime and compare it with eager on varied batches.

    Returns the largest absolute output difference; raises BuildError when the artifact fails on a
    batch or (with a ``tolerance``) drifts beyond it.
    """
    runtime = TorchRuntime()
    declared = runtime.load(directory, RuntimeSettings(name="torch", intra_op_threads=0)).inputs
    worst = 0.0
    for batch in varied_batches(samples, model.inputs):
        expected = eager_outputs(model, batch)
        feeds = {spec.name: t.numpy().astype(spec.numpy_dtype) for spec, t in zip(declared, batch, strict=True)}
        try:
            actual = runtime.infer(feeds)
        except Exception as exc:
            shape = tuple(batch[0].shape)
            raise BuildError(f"{what}: the saved model fails on inputs of shape {shape}: {first_line(exc)}") from exc
        worst = max(worst, max_abs_diff(actual, expected))
    if tolerance is not None and not worst <= tolerance:
        raise BuildError(f"{what}: the saved model's outputs differ from eager by {worst:.3g} (> {tolerance:g})")
    return round(worst, 8)


def varied_batches(samples: tuple[torch.Tensor, ...], specs: Sequence[TensorSpec]) -> list[tuple[torch.Tensor, ...]]:
    """The sample batch, a batch one row bigger, and (where an input has a dynamic axis 1) a shorter one."""
    bigger = tuple(torch.cat([s, s[:1]]) for s in samples)
    batches = [samples, bigger]
    if all(len(spec.shape) > 1 and spec.shape[1] == -1 for spec in specs) and samples[0].shape[1] >= 4:
        half = samples[0].shape[1] // 2
        batches.append(tuple(s[:, :half].contiguous() for s in samples))
    return batches


def eager_outputs(model: TorchModel, batch: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    """The eager module's outputs by name."""
    with torch.inference_mode():
        result = model.module(*batch)
    if isinstance(result, dict):
        return {spec.name: result[spec.name].numpy() for spec in model.outputs}
    values = list(result) if isinstance(result, tuple | list) else [result]
    return {spec.name: value.numpy() for spec, value in zip(model.outputs, values, strict=True)}


def max_abs_diff(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> float:
    """The largest absolute difference over every output (inf on a shape mismatch)."""
    worst = 0.0
    for name, want in expected.items():
        got = np.asarray(actual[name], dtype=np.float64)
        if got.shape != want.shape:
            return float("inf")
        if want.size:
            worst = max(worst, float(np.max(np.abs(got - want.astype(np.float64)))))
    return worst


@contextmanager
def quiet_torch() -> Iterator[list[warnings.WarningMessage]]:
    """Record torch's tracer and deprecation warnings (torch.jit is deprecated but still the only
    file format that needs no Python class at load) instead of printing them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def first_line(exc: BaseException) -> str:
    """An exception's first non-empty line, or its type name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
