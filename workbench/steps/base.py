"""The Step contract (after Olive's passes): an artifact in, a new artifact at a new path out.

A step never modifies its input. ``build.py`` caches each step's output by
hash(parent artifact, step name, step config) and records the lineage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from workbench.artifact import Artifact
from workbench.errors import BuildError
from workbench.registry import Registry

ONNX_FILE = "model.onnx"  # the file every ONNX step writes into its workdir


class StepConfig(BaseModel):
    """Base of every step's Config: frozen, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class StepContext:
    """What steps may need beyond the artifact: sample inputs and calibration data.

    ``sample_inputs`` is a small batch (batch first) used for tracing and export;
    ``calibration_inputs`` are batches for static quantization: the data's held-out samples, or its
    evaluation samples when it has none (``calibration_held_out`` False); ``calibration_digest``
    identifies them, and is part of the cache key of steps whose ``uses_calibration`` is true;
    ``dynamic_axes`` names the dynamic axes per input, e.g. ``{"input": {0: "batch"}}``.
    """

    sample_inputs: dict[str, np.ndarray]
    dynamic_axes: dict[str, dict[int, str]]
    output_names: tuple[str, ...]
    calibration_inputs: tuple[dict[str, np.ndarray], ...] = ()
    calibration_held_out: bool = True
    calibration_digest: str = ""
    fine_tune: object | None = None
    extra: dict[str, object] = field(default_factory=dict)


class Step(Protocol):
    """A build step."""

    name: ClassVar[str]
    Config: ClassVar[type[StepConfig]]

    def apply(self, artifact: Artifact, config: StepConfig, workdir: Path, context: StepContext) -> Artifact:
        """Write a new artifact under ``workdir`` (empty, owned by this call) and return it."""
        ...


STEPS: Registry[type[Step]] = Registry("steps", builtins="workbench.steps")

ConfigT = TypeVar("ConfigT", bound=StepConfig)


def expect_config(step: str, config: StepConfig, kind: type[ConfigT]) -> ConfigT:
    """``config`` as the step's own Config class (``build`` validates it; this guards direct calls)."""
    if not isinstance(config, kind):
        raise TypeError(f"{step} takes {kind.__name__}, got {type(config).__name__}")
    return config


def onnx_output(step: str, artifact: Artifact, workdir: Path) -> Path:
    """Where an ONNX-to-ONNX step writes (``workdir/model.onnx``, folder made); the one message every
    ONNX-only step gives for another format."""
    if artifact.format != "onnx":
        raise BuildError(f"{step} needs an ONNX model, got {artifact.format!r}: add export.onnx before {step}")
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir / ONNX_FILE
