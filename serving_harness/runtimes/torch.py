"""PyTorch: every torch artifact the workbench writes, loaded without unpickling Python objects.

A torch artifact is a directory whose ``model.json`` names its format, its file and its schema::

    {"format": "torch-factory", "factory": "pkg.module:function", "kwargs": {...}, "inputs": [...], "outputs": [...]}
        + weights.pt   the state_dict, read with ``torch.load(weights_only=True)``; the factory is imported
                       by name, so the module that defines the architecture must be installed where it is served
    {"format": "torchscript", "file": "model.pt", "inputs": [...], "outputs": [...]}
        + model.pt     a TorchScript archive, read with ``torch.jit.load`` (code and tensors, no pickled objects)
    {"format": "torch-export", "file": "model.pt2", ...}
        + model.pt2    an ExportedProgram, read with ``torch.export.load``
    {"format": "torch-tensorrt", "file": "model.ep", ...}
        + model.ep     an ExportedProgram holding TensorRT engines: needs CUDA and torch-tensorrt

A ``torch-factory`` artifact names code to import, so it is a lab artifact: it is refused inside a bundle
(any folder above it holding a ``manifest.json``), where only data may ship (``serving_harness.bundle``).

A ``torch-factory`` or ``torch-export`` description may also hold ``"compile": {"mode": ..., "dynamic": ...,
"fullgraph": ...}`` (see ``CompileOptions``). ``torch.compile`` makes no file, so a compiled artifact is its source
artifact plus these options: the runtime compiles at load and runs warm-up batches (batch 2, then 1) so the first
request does not pay for compilation. Inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``) makes a second load
of the same model much faster than the first.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from serving_harness.config import RuntimeSettings
from serving_harness.runtimes.base import ModelMetadata, RuntimeUnavailable, TensorSpec

logger = logging.getLogger(__name__)

TORCH_MODEL_FILE = "model.json"
TORCH_WEIGHTS_FILE = "weights.pt"
FACTORY_FORMAT = "torch-factory"
TORCHSCRIPT_FORMAT = "torchscript"
EXPORT_FORMAT = "torch-export"
TENSORRT_FORMAT = "torch-tensorrt"
COMPILE_KEY = "compile"
BUNDLE_MANIFEST = "manifest.json"  # serving_harness.bundle.MANIFEST_FILE (not imported: the runtimes stand alone)
# Sizes of dynamic axes in the warm-up batches of a compiled model: the batch axis, then any other.
_WARMUP_BATCHES = (2, 1)
_WARMUP_OTHER_AXIS = 8
_PLATFORMS = {
    FACTORY_FORMAT: "pytorch_eager",
    TORCHSCRIPT_FORMAT: "pytorch_torchscript",
    EXPORT_FORMAT: "pytorch_export",
    TENSORRT_FORMAT: "pytorch_tensorrt",
}

CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


class CompileOptions(BaseModel):
    """How the runtime applies ``torch.compile`` at load (inductor backend).

    ``dynamic`` marks the schema's dynamic axes (-1: the batch axis, a sequence axis) dynamic, so other
    batch sizes reuse the compiled code; False compiles again for each new shape.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: CompileMode = "default"
    dynamic: bool = True
    fullgraph: bool = False


def import_callable(reference: str) -> Any:
    """Import ``pkg.module:attr``; raise ValueError with the reference on failure."""
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected 'pkg.module:function', got {reference!r}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {reference!r}: {exc}") from exc


def read_description(path: Path) -> dict[str, Any]:
    """The artifact's ``model.json`` (a ``torch-factory`` one when it names no format)."""
    description: dict[str, Any] = json.loads((path / TORCH_MODEL_FILE).read_text())
    description.setdefault("format", FACTORY_FORMAT)
    return description


def schema_of(description: dict[str, Any]) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The (inputs, outputs) a description declares."""
    inputs = tuple(TensorSpec(**spec) for spec in description["inputs"])
    outputs = tuple(TensorSpec(**spec) for spec in description["outputs"])
    return inputs, outputs


def load_module(path: Path, description: dict[str, Any], device: str) -> Any:
    """The callable module of a torch artifact directory, in eval mode on ``device`` (not compiled)."""
    loaders: dict[str, Callable[[Path, dict[str, Any], str], Any]] = {
        FACTORY_FORMAT: _load_factory,
        TORCHSCRIPT_FORMAT: _load_torchscript,
        EXPORT_FORMAT: _load_exported,
        TENSORRT_FORMAT: _load_tensorrt,
    }
    loader = loaders.get(description["format"])
    if loader is None:
        raise RuntimeUnavailable(f"unknown torch artifact format {description['format']!r}; known: {sorted(loaders)}")
    return loader(path, description, device)


def _load_factory(path: Path, description: dict[str, Any], device: str) -> Any:
    import torch

    _refuse_in_bundle(path, description)
    module = import_callable(description["factory"])(**description.get("kwargs", {}))
    state = torch.load(path / TORCH_WEIGHTS_FILE, map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    return module.eval().to(device)


def _refuse_in_bundle(path: Path, description: dict[str, Any]) -> None:
    """A bundle is data: a factory named in one would run whatever code the bundle's author chose."""
    resolved = path.resolve()
    bundle = next((p for p in (resolved, *resolved.parents) if (p / BUNDLE_MANIFEST).exists()), None)
    if bundle is not None:
        raise RuntimeUnavailable(
            f"{path / TORCH_MODEL_FILE}: a {FACTORY_FORMAT} artifact names code to import "
            f"({description.get('factory')!r}) and is refused inside a bundle ({bundle}): ship ONNX (export.onnx)"
        )


def _load_torchscript(path: Path, description: dict[str, Any], device: str) -> Any:
    import torch

    scripted = torch.jit.load(str(path / description["file"]), map_location=device)  # type: ignore[no-untyped-call]
    return scripted.eval()


def _load_exported(path: Path, description: dict[str, Any], device: str) -> Any:
    import torch

    return torch.export.load(path / description["file"]).module().to(device)


def _load_tensorrt(path: Path, description: dict[str, Any], device: str) -> Any:
    if not device.startswith("cuda"):
        raise RuntimeUnavailable("a TensorRT artifact runs on CUDA only: serve it with runtime.device: cuda")
    try:
        import torch_tensorrt  # noqa: F401  (registers the TensorRT ops the program calls)
    except ImportError as exc:
        raise RuntimeUnavailable("a TensorRT artifact needs torch-tensorrt: pip install 'workbench[gpu]'") from exc
    return _load_exported(path, description, device)


def compile_module(module: Any, options: CompileOptions, examples: Sequence[tuple[Any, ...]]) -> Any:
    """``torch.compile(module)``, run once on each example batch so compilation happens now.

    With ``options.dynamic``, mark the first example's dynamic axes beforehand (``mark_dynamic``); shapes
    are otherwise static, and each new shape compiles again.
    """
    import torch

    dynamic = None if options.dynamic else False  # None: only the marked axes (and recompiled ones) are dynamic
    compiled = torch.compile(module, mode=options.mode, fullgraph=options.fullgraph, dynamic=dynamic)
    with torch.inference_mode():
        for example in examples:
            compiled(*example)  # type: ignore[no-untyped-call]
    return compiled


def mark_dynamic(tensors: tuple[Any, ...], specs: Sequence[TensorSpec]) -> None:
    """Mark each tensor's dynamic axes (-1 in its spec, and the batch axis) dynamic for torch.compile."""
    import torch

    for tensor, spec in zip(tensors, specs, strict=True):
        for axis, size in enumerate(spec.shape):
            if (axis == 0 or size == -1) and tensor.shape[axis] >= 2:  # sizes 0 and 1 are always specialised
                torch._dynamo.mark_dynamic(tensor, axis)


def warmup_examples(specs: Sequence[TensorSpec], device: str, *, dynamic: bool) -> list[tuple[Any, ...]]:
    """Zero-filled batches shaped by the schema: batch 2 (its dynamic axes marked), then batch 1."""
    import torch

    examples = []
    for batch in _WARMUP_BATCHES:
        tensors = tuple(
            torch.zeros(_warmup_shape(spec.shape, batch), dtype=_torch_dtype(spec), device=device) for spec in specs
        )
        if dynamic and batch >= 2:
            mark_dynamic(tensors, specs)
        examples.append(tensors)
    return examples


def _warmup_shape(shape: tuple[int, ...], batch: int) -> list[int]:
    return [batch if axis == 0 else (_WARMUP_OTHER_AXIS if size == -1 else size) for axis, size in enumerate(shape)]


def _torch_dtype(spec: TensorSpec) -> Any:
    import torch

    return torch.from_numpy(np.zeros(0, dtype=spec.numpy_dtype)).dtype


def as_tensor(array: np.ndarray, device: str) -> Any:
    """A torch tensor of ``array`` on ``device``; read-only arrays (decoded request bodies) are copied first,
    because ``torch.from_numpy`` shares memory and torch assumes it may write to it."""
    import torch

    writable = array.flags.writeable and array.flags.c_contiguous
    return torch.from_numpy(array if writable else np.array(array, order="C", copy=True)).to(device)


class TorchRuntime:
    """Runs any torch artifact (eager, TorchScript, ExportedProgram, compiled) under ``torch.inference_mode``."""

    name: ClassVar[str] = "torch"

    def __init__(self) -> None:
        self._module: Any = None
        self._input_names: list[str] = []
        self._output_names: list[str] = []
        self._device = "cpu"

    def load(self, path: Path, settings: RuntimeSettings) -> ModelMetadata:
        try:
            import torch
        except ImportError as exc:  # pragma: no cover - torch is optional for serving
            raise RuntimeUnavailable("the torch runtime needs PyTorch: pip install torch") from exc
        if settings.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeUnavailable(f"device {settings.device!r} asked for, but this machine has no CUDA")
        if settings.intra_op_threads > 0:
            torch.set_num_threads(settings.intra_op_threads)
        description = read_description(path)
        inputs, outputs = schema_of(description)
        self._device = settings.device
        self._module = load_module(path, description, self._device)
        if COMPILE_KEY in description:
            options = CompileOptions.model_validate(description[COMPILE_KEY])
            examples = warmup_examples(inputs, self._device, dynamic=options.dynamic)
            self._module = compile_module(self._module, options, examples)
        self._input_names = [spec.name for spec in inputs]
        self._output_names = [spec.name for spec in outputs]
        platform = _PLATFORMS[description["format"]] + ("_compiled" if COMPILE_KEY in description else "")
        return ModelMetadata(platform=platform, inputs=inputs, outputs=outputs)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            args = [as_tensor(inputs[name], self._device) for name in self._input_names]
            result = self._module(*args)
        if isinstance(result, dict):
            result = [result[n] for n in self._output_names]
        elif not isinstance(result, tuple | list):
            result = [result]
        return {n: _to_numpy(t) for n, t in zip(self._output_names, result, strict=True)}


def _to_numpy(tensor: Any) -> np.ndarray:
    import torch

    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
        tensor = tensor.float()
    array: np.ndarray = tensor.detach().cpu().numpy()
    return array
