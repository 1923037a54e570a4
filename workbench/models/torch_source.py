"""Torch factory artifacts (the format ``serving_harness.runtimes.torch`` serves) and the ``torch`` source.

A torch artifact is a directory with ``model.json`` (factory, kwargs, input and output schema) and
``weights.pt`` (the state_dict). Sources write one under the cache, keyed by what made it, so a
second load is a directory lookup.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from serving_harness.runtimes.base import NUMPY_TO_OIP, TensorSpec
from serving_harness.runtimes.torch import TORCH_MODEL_FILE, TORCH_WEIGHTS_FILE
from workbench.artifact import Artifact, hash_path
from workbench.errors import UsageError
from workbench.models.base import MODEL_SOURCES, SourceModel
from workbench.recipe.spec import ModelSpec
from workbench.registry import import_callable

logger = logging.getLogger(__name__)

TORCH_FORMAT_TAG = "torch-factory"
_HASH_SUFFIX = ".sha256"
# Sizes given to dynamic axes when a model is run once to learn its output schema.
_PROBE_SIZES = ((2, 8), (3, 9))


@dataclass(frozen=True)
class TorchModel:
    """A torch artifact loaded back: the module (in eval mode) and its schema."""

    module: nn.Module
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def dynamic_axes_for(specs: Iterable[TensorSpec]) -> dict[str, dict[int, str]]:
    """Names for every -1 axis: axis 0 is ``batch``, axis 1 ``sequence``, any other ``dim<axis>``."""
    names = {0: "batch", 1: "sequence"}
    return {
        spec.name: {
            axis: names.get(axis, f"dim{axis}") for axis, size in enumerate(spec.shape) if size == -1 or axis == 0
        }
        for spec in specs
    }


def write_torch_artifact(
    directory: Path,
    *,
    factory: str,
    kwargs: Mapping[str, Any],
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    state_dict: Mapping[str, torch.Tensor],
) -> None:
    """Write a torch artifact at ``directory`` atomically (a temporary sibling, then a rename)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-"))
    try:
        description = {
            "format": TORCH_FORMAT_TAG,
            "factory": factory,
            "kwargs": dict(kwargs),
            "inputs": [spec.model_dump(mode="json") for spec in inputs],
            "outputs": [spec.model_dump(mode="json") for spec in outputs],
        }
        (staging / TORCH_MODEL_FILE).write_text(json.dumps(description, indent=2, sort_keys=True))
        torch.save(dict(state_dict), staging / TORCH_WEIGHTS_FILE)
        staging.rename(directory)
    except OSError:
        if not (directory / TORCH_MODEL_FILE).exists():
            raise
        logger.debug("another process wrote %s first; keeping theirs", directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_torch_model(path: Path) -> TorchModel:
    """Build a torch artifact's module the way ``TorchRuntime`` does: factory by name, weights_only load."""
    description = json.loads((path / TORCH_MODEL_FILE).read_text())
    module = import_callable(description["factory"])(**description.get("kwargs", {}))
    state = torch.load(path / TORCH_WEIGHTS_FILE, map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    inputs = tuple(TensorSpec(**spec) for spec in description["inputs"])
    outputs = tuple(TensorSpec(**spec) for spec in description["outputs"])
    return TorchModel(module=module.eval(), inputs=inputs, outputs=outputs)


def torch_source_model(path: Path) -> SourceModel:
    """The SourceModel of a torch artifact directory (its content hash is remembered beside it)."""
    description = json.loads((path / TORCH_MODEL_FILE).read_text())
    inputs = tuple(TensorSpec(**spec) for spec in description["inputs"])
    outputs = tuple(TensorSpec(**spec) for spec in description["outputs"])
    artifact = Artifact(path=path, format="torch", content_hash=_remembered_hash(path))
    return SourceModel(
        artifact=artifact, inputs=inputs, outputs=outputs, dynamic_axes=dynamic_axes_for((*inputs, *outputs))
    )


def _remembered_hash(path: Path) -> str:
    """``hash_path(path)``, kept in a sidecar file so a large cached artifact is hashed once."""
    sidecar = path.with_name(path.name + _HASH_SUFFIX)
    if sidecar.exists():
        return sidecar.read_text().strip()
    digest = hash_path(path)
    sidecar.write_text(digest)
    return digest


@MODEL_SOURCES.register("torch")
def torch_source(spec: ModelSpec, cache: Path) -> SourceModel:
    """A factory (``pkg.module:function``) with optional weights, written as a cached torch artifact."""
    if not spec.inputs:
        raise UsageError("source 'torch' needs inputs: [{name, datatype, shape}] with -1 for dynamic axes")
    directory = cache / "sources" / f"torch-{_torch_key(spec)[:24]}"
    if not (directory / TORCH_MODEL_FILE).exists():
        module = _build_module(spec)
        outputs = spec.outputs or infer_outputs(module, spec.inputs)
        write_torch_artifact(
            directory,
            factory=spec.factory or "",
            kwargs=spec.kwargs,
            inputs=spec.inputs,
            outputs=outputs,
            state_dict=module.state_dict(),
        )
    return torch_source_model(directory)


def _torch_key(spec: ModelSpec) -> str:
    digest = hashlib.sha256(spec.model_dump_json().encode())
    if spec.weights:
        digest.update(hash_path(_existing(spec.weights)).encode())
    return digest.hexdigest()


def _existing(path: str) -> Path:
    found = Path(path).expanduser()
    if not found.is_file():
        raise UsageError(f"model weights file {path!r} does not exist")
    return found


def _build_module(spec: ModelSpec) -> nn.Module:
    """The factory's module with the spec's weights loaded (seeded, so a weightless model is reproducible)."""
    try:
        factory = import_callable(spec.factory or "")
    except UsageError as exc:
        raise UsageError(f"model.factory: {exc}") from None
    torch.manual_seed(0)
    module = factory(**spec.kwargs)
    if not isinstance(module, nn.Module):
        raise UsageError(f"model.factory {spec.factory!r} returned {type(module).__name__}, not a torch.nn.Module")
    if spec.weights:
        state = torch.load(_existing(spec.weights), map_location="cpu", weights_only=True)
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise UsageError(f"model.weights {spec.weights!r} do not fit {spec.factory!r}: {first}") from None
    return module.eval()


def infer_outputs(module: nn.Module, inputs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """Learn the output schema by running the module twice with different sizes for the dynamic axes.

    Axes whose size changes between the two runs are dynamic (-1); the batch axis always is.
    """
    first, second = (_probe(module, inputs, sizes) for sizes in _PROBE_SIZES)
    specs = []
    for (name, a), (_, b) in zip(first.items(), second.items(), strict=True):
        shape = tuple(-1 if axis == 0 or a.shape[axis] != b.shape[axis] else a.shape[axis] for axis in range(a.ndim))
        specs.append(TensorSpec(name=name, datatype=NUMPY_TO_OIP[a.dtype], shape=shape))
    return tuple(specs)


def _probe(module: nn.Module, inputs: tuple[TensorSpec, ...], sizes: tuple[int, int]) -> dict[str, np.ndarray]:
    batch, other = sizes
    shapes = [[batch if axis == 0 else (other if d == -1 else d) for axis, d in enumerate(s.shape)] for s in inputs]
    args = [torch.from_numpy(np.zeros(shape, spec.numpy_dtype)) for shape, spec in zip(shapes, inputs, strict=True)]
    with torch.inference_mode():
        result = module(*args)
    if isinstance(result, dict):
        return {str(k): v.numpy() for k, v in result.items()}
    values = list(result) if isinstance(result, tuple | list) else [result]
    names = ["output"] if len(values) == 1 else [f"output_{i}" for i in range(len(values))]
    return {name: value.numpy() for name, value in zip(names, values, strict=True)}
