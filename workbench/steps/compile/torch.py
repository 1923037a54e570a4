"""Torch compilation steps: ``compile.torch`` (torch.compile, inductor) and ``compile.tensorrt``
(torch-tensorrt, CUDA only)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from serving_harness.runtimes.base import TensorSpec
from serving_harness.runtimes.torch import (
    COMPILE_KEY,
    TENSORRT_FORMAT,
    TORCH_MODEL_FILE,
    CompileMode,
    CompileOptions,
    compile_module,
    load_module,
    mark_dynamic,
    read_description,
    schema_of,
)
from workbench.artifact import Artifact
from workbench.errors import BuildError, MissingDependencyError
from workbench.steps.base import STEPS, StepConfig, StepContext, expect_config
from workbench.steps.export.torch import (
    MODEL_DIR,
    first_line,
    max_abs_diff,
    quiet_torch,
    sample_tensors,
    write_description,
)
from workbench.steps.quantize.torch import CastIO

logger = logging.getLogger(__name__)

TENSORRT_FILE = "model.ep"
COMPILABLE = frozenset({"torch", "torch_export"})
MISSING_CUDA = "compile.tensorrt needs a CUDA GPU and this machine has none: run this recipe on a GPU machine"
MISSING_TENSORRT = "compile.tensorrt needs torch-tensorrt: pip install -e '.[gpu]' on a CUDA machine"


class CompileTorchConfig(StepConfig):
    """``compile.torch`` settings (see ``serving_harness.runtimes.torch.CompileOptions``).

    Example::

        - compile.torch: {mode: max-autotune, dynamic: true}
    """

    mode: CompileMode = "default"
    dynamic: bool = Field(default=True, description="Mark the batch (and other -1) axes dynamic: one compile.")
    fullgraph: bool = Field(default=False, description="Fail on a graph break instead of falling back to eager.")


@STEPS.register("compile.torch")
class CompileTorch:
    """``torch.compile`` (inductor) for a torch factory artifact or an ExportedProgram.

    A compiled module cannot be saved as a file, so the artifact is the parent artifact's files (hard-linked
    where possible) with ``"compile": {mode, dynamic, fullgraph}`` added to its ``model.json``: the torch
    runtime compiles at load and warms up before it reports ready (see ``serving_harness.runtimes.torch``).
    The step compiles once here, on the sample batch and a batch of one, to check that the model compiles,
    to measure it, and to fill inductor's on-disk cache for the loads that follow. Figures: ``compile_s``
    (that compilation and warm-up), ``cache_hits`` / ``cache_misses`` (inductor FX-graph cache lookups during
    it), ``cache_warm`` (1 when nothing was compiled from scratch: every lookup hit, or dynamo reused code
    compiled earlier in this process for the same architecture), ``compile_max_abs_diff`` (against eager on
    the sample batch).
    """

    name: ClassVar[str] = "compile.torch"
    Config: ClassVar[type[StepConfig]] = CompileTorchConfig

    def apply(self, artifact: Artifact, config: StepConfig, workdir: Path, context: StepContext) -> Artifact:
        """Write ``workdir/model/``: the parent's files and a ``model.json`` with the compile options."""
        config = expect_config(self.name, config, CompileTorchConfig)
        _require_compilable(self.name, artifact)
        options = CompileOptions(**config.model_dump())
        description = read_description(artifact.path)
        inputs, _ = schema_of(description)
        samples = sample_tensors(inputs, context)
        module = load_module(artifact.path, description, "cpu")
        figures = _compile_and_measure(module, options, inputs, samples)
        directory = workdir / MODEL_DIR
        _link_tree(artifact.path, directory)
        description[COMPILE_KEY] = options.model_dump(mode="json")
        (directory / TORCH_MODEL_FILE).unlink()  # a hard link to the parent's: never write through it
        (directory / TORCH_MODEL_FILE).write_text(json.dumps(description, indent=2, sort_keys=True))
        return Artifact(path=directory, format="torch_compiled", figures=figures)


def _require_compilable(step: str, artifact: Artifact) -> None:
    if artifact.format not in COMPILABLE:
        raise BuildError(
            f"{step} takes a torch factory artifact or an ExportedProgram (export.torch_export), "
            f"not {artifact.format!r}"
        )


def _compile_and_measure(
    module: Any, options: CompileOptions, inputs: tuple[TensorSpec, ...], samples: tuple[Any, ...]
) -> dict[str, float]:
    """Compile ``module`` on the samples (and their first row), timing it and counting cache lookups.

    ``torch.compile`` wraps the module without changing it, so ``module`` itself is the eager reference.
    """
    if options.dynamic:
        mark_dynamic(samples, inputs)
    examples = [samples, tuple(s[:1] for s in samples)]
    before = _cache_counts()
    started = time.perf_counter()
    try:
        with quiet_torch():
            compiled = compile_module(module, options, examples)
    except Exception as exc:
        raise BuildError(f"torch.compile failed: {type(exc).__name__}: {first_line(exc)}") from exc
    compile_s = time.perf_counter() - started
    hits, misses = (after - earlier for after, earlier in zip(_cache_counts(), before, strict=True))
    with torch.inference_mode():
        diff = max_abs_diff(_named(compiled(*samples)), _named(module(*samples)))
    logger.info("compiled in %.1f s (inductor cache: %d hits, %d misses)", compile_s, hits, misses)
    return {
        "compile_s": round(compile_s, 3),
        "cache_hits": float(hits),
        "cache_misses": float(misses),
        "cache_warm": float(misses == 0),
        "compile_max_abs_diff": round(diff, 8),
    }


def _cache_counts() -> tuple[int, int]:
    """Inductor's FX-graph cache (hits, misses) so far in this process (torch's own counters)."""
    from torch._dynamo.utils import counters

    return counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"]


def _named(result: Any) -> dict[str, Any]:
    """A module's outputs keyed by position, as numpy arrays (what ``max_abs_diff`` compares)."""
    if isinstance(result, dict):
        values = list(result.values())
    else:
        values = list(result) if isinstance(result, tuple | list) else [result]
    return {str(index): value.detach().float().cpu().numpy() for index, value in enumerate(values)}


def _link_tree(source: Path, target: Path) -> None:
    """Copy a directory, hard-linking files where the filesystem allows (the weights are not rewritten)."""
    link: Callable[[str, str], object] = os.link
    try:
        shutil.copytree(source, target, copy_function=link)
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


class CompileTensorRTConfig(StepConfig):
    """``compile.tensorrt`` settings: TensorRT engines for a range of batch sizes.

    Example::

        - compile.tensorrt: {precision: fp16, max_batch_size: 32}
    """

    precision: Literal["fp32", "fp16"] = "fp16"
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    opt_batch_size: int | None = Field(default=None, ge=1, description="The batch size tuned for (default: max).")
    max_other_size: int = Field(default=512, ge=1, description="Upper bound of other dynamic axes (sequence).")
    workspace_mb: int = Field(default=1024, ge=64, description="TensorRT builder workspace.")
    min_block_size: int = Field(default=5, ge=1, description="Smallest subgraph worth a TensorRT engine.")

    @model_validator(mode="after")
    def _opt_within_max(self) -> CompileTensorRTConfig:
        if self.opt_batch_size is not None and self.opt_batch_size > self.max_batch_size:
            raise ValueError(f"opt_batch_size {self.opt_batch_size} is above max_batch_size {self.max_batch_size}")
        return self


@STEPS.register("compile.tensorrt")
class CompileTensorRT:
    """torch-tensorrt (dynamo IR) for a torch factory artifact or an ExportedProgram; CUDA only.

    The TensorRT-compiled program is saved with ``torch_tensorrt.save`` as an ExportedProgram
    (``model.json`` + ``model.ep``) that the torch runtime serves with ``runtime.device: cuda``. With
    ``precision: fp16`` the module runs in float16 with float32 inputs and outputs. Without CUDA or
    torch-tensorrt the step fails with a MissingDependencyError saying where it runs. Figures: ``compile_s``.
    """

    name: ClassVar[str] = "compile.tensorrt"
    Config: ClassVar[type[StepConfig]] = CompileTensorRTConfig

    def apply(self, artifact: Artifact, config: StepConfig, workdir: Path, context: StepContext) -> Artifact:
        """Write ``workdir/model/`` (``model.json``, ``model.ep``)."""
        config = expect_config(self.name, config, CompileTensorRTConfig)
        _require_compilable(self.name, artifact)
        trt = require_tensorrt()
        description = read_description(artifact.path)
        inputs, outputs = schema_of(description)
        samples = tuple(s.cuda() for s in sample_tensors(inputs, context))
        module = load_module(artifact.path, description, "cuda")
        if config.precision == "fp16":
            module = CastIO(module.half(), torch.float16, keep_io_types=True)
        started = time.perf_counter()
        try:
            compiled = trt.compile(
                module,
                ir="dynamo",
                inputs=_tensorrt_inputs(trt, inputs, samples, config),
                workspace_size=config.workspace_mb << 20,
                min_block_size=config.min_block_size,
            )
        except Exception as exc:
            raise BuildError(f"torch_tensorrt.compile failed: {type(exc).__name__}: {first_line(exc)}") from exc
        directory = workdir / MODEL_DIR
        directory.mkdir(parents=True)
        trt.save(compiled, str(directory / TENSORRT_FILE), output_format="exported_program", inputs=list(samples))
        write_description(directory, TENSORRT_FORMAT, TENSORRT_FILE, inputs, outputs)
        figures = {"compile_s": round(time.perf_counter() - started, 3)}
        return Artifact(path=directory, format="torch_tensorrt", figures=figures)


def require_tensorrt() -> Any:
    """The ``torch_tensorrt`` module; MissingDependencyError without CUDA or without the package."""
    if not torch.cuda.is_available():
        raise MissingDependencyError(MISSING_CUDA)
    try:
        import torch_tensorrt
    except ImportError:
        raise MissingDependencyError(MISSING_TENSORRT) from None
    return torch_tensorrt


def _tensorrt_inputs(
    trt: Any, specs: tuple[TensorSpec, ...], samples: tuple[Any, ...], config: CompileTensorRTConfig
) -> list[Any]:
    """One ``torch_tensorrt.Input`` per input: batch 1..max, other dynamic axes 1..max_other_size."""
    made = []
    for spec, sample in zip(specs, samples, strict=True):
        ranges = [_axis_range(axis, size, int(sample.shape[axis]), config) for axis, size in enumerate(spec.shape)]
        low, opt, high = (list(column) for column in zip(*ranges, strict=True))
        made.append(trt.Input(min_shape=low, opt_shape=opt, max_shape=high, dtype=sample.dtype))
    return made


def _axis_range(axis: int, size: int, sample_size: int, config: CompileTensorRTConfig) -> tuple[int, int, int]:
    """(min, opt, max) of one axis: the batch axis, another dynamic axis, or a fixed one."""
    if axis == 0:
        return 1, config.opt_batch_size or config.max_batch_size, config.max_batch_size
    if size == -1:
        return 1, min(sample_size, config.max_other_size), config.max_other_size
    return size, size, size
