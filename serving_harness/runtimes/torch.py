"""PyTorch eager: a model built by a factory, with weights loaded without unpickling objects.

A torch artifact is a directory::

    model.json   {"format": "torch-factory", "factory": "pkg.module:function", "kwargs": {...},
                  "inputs": [TensorSpec...], "outputs": [TensorSpec...]}
    weights.pt   the state_dict, read with ``torch.load(weights_only=True)``

The factory is imported by name, so the module that defines the architecture must be installed
where the model is served.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from serving_harness.runtimes.base import ModelMetadata, RuntimeUnavailable, TensorSpec
from serving_harness.settings import RuntimeSettings

TORCH_MODEL_FILE = "model.json"
TORCH_WEIGHTS_FILE = "weights.pt"


def import_callable(reference: str) -> Any:
    """Import ``pkg.module:attr``; raise ValueError with the reference on failure."""
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected 'pkg.module:function', got {reference!r}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {reference!r}: {exc}") from exc


class TorchRuntime:
    """Runs a torch factory artifact in eager mode under ``torch.inference_mode``."""

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
        description = json.loads((path / TORCH_MODEL_FILE).read_text())
        if settings.intra_op_threads > 0:
            torch.set_num_threads(settings.intra_op_threads)
        module = import_callable(description["factory"])(**description.get("kwargs", {}))
        state = torch.load(path / TORCH_WEIGHTS_FILE, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
        self._device = settings.device
        self._module = module.eval().to(self._device)
        inputs = tuple(TensorSpec(**spec) for spec in description["inputs"])
        outputs = tuple(TensorSpec(**spec) for spec in description["outputs"])
        self._input_names = [spec.name for spec in inputs]
        self._output_names = [spec.name for spec in outputs]
        return ModelMetadata(platform="pytorch_eager", inputs=inputs, outputs=outputs)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            args = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self._device) for n in self._input_names]
            result = self._module(*args)
        if isinstance(result, dict):
            result = [result[n] for n in self._output_names]
        elif not isinstance(result, tuple | list):
            result = [result]
        return {n: t.detach().cpu().numpy() for n, t in zip(self._output_names, result, strict=True)}
