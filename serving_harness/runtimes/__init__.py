"""Runtimes by name. ``create_runtime("onnxruntime")`` returns a new, unloaded runtime."""

from __future__ import annotations

from collections.abc import Callable

from serving_harness.runtimes.base import (
    ModelMetadata,
    Runtime,
    RuntimeUnavailable,
    TensorSpec,
)

__all__ = ["ModelMetadata", "Runtime", "RuntimeUnavailable", "TensorSpec", "available_runtimes", "create_runtime"]


def _onnxruntime() -> Runtime:
    from serving_harness.runtimes.onnxruntime import OnnxRuntime

    return OnnxRuntime()


def _torch() -> Runtime:
    from serving_harness.runtimes.torch import TorchRuntime

    return TorchRuntime()


_FACTORIES: dict[str, Callable[[], Runtime]] = {"onnxruntime": _onnxruntime, "torch": _torch}


def available_runtimes() -> list[str]:
    return sorted(_FACTORIES)


def create_runtime(name: str) -> Runtime:
    """A new runtime instance; an unknown name lists the ones there are."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise RuntimeUnavailable(f"unknown runtime {name!r}; available: {', '.join(available_runtimes())}") from None
    return factory()
