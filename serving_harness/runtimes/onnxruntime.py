"""ONNX Runtime: CPU by default; CUDA and TensorRT execution providers with the [gpu] extra.

OIP ``BYTES`` tensors travel as object arrays of ``bytes``; ONNX Runtime's ``tensor(string)`` wants
``str``, so string inputs are decoded (UTF-8) on the way in and string outputs encoded on the way out.

Inputs and outputs must be tensors: a sequence or a map (skl2onnx's default ``ZipMap`` output,
``seq(map(int64,tensor(float)))``) has no OIP datatype, so ``load`` refuses it (BadInput, naming it and the fix)
and the model is not ready, instead of answering every request with a 500.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from serving_harness.config import RuntimeSettings
from serving_harness.errors import BadInput
from serving_harness.runtimes.base import ModelMetadata, RuntimeUnavailable, TensorSpec

_ORT_TO_OIP = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
_STRING = "tensor(string)"
# Providers that need a GPU; ORT silently falls back to CPU when one of them cannot start.
GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})
_GPU_HINT = "install the [gpu] extra on a CUDA machine (pip uninstall -y onnxruntime first)"


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(name=arg.name, datatype=_ORT_TO_OIP.get(arg.type, arg.type), shape=shape)


def _check_providers(wanted: tuple[str, ...]) -> list[str]:
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    missing = [p for p in wanted if p not in available]
    if missing:
        raise RuntimeUnavailable(
            f"ONNX Runtime here lacks {', '.join(missing)} (has {', '.join(sorted(available))}); {_GPU_HINT}"
        )
    return list(wanted)


def _check_started(session: Any, wanted: list[str]) -> None:
    """Refuse a session that dropped an asked-for GPU provider (onnxruntime-gpu without a usable CUDA)."""
    dropped = [p for p in wanted if p in GPU_PROVIDERS and p not in session.get_providers()]
    if dropped:
        raise RuntimeUnavailable(
            f"ONNX Runtime could not start {', '.join(dropped)} (no CUDA device, or CUDA/cuDNN/TensorRT "
            f"libraries missing); run on a CUDA machine or use CPUExecutionProvider"
        )


def _check_tensors(session: Any) -> None:
    """Refuse a model with a non-tensor input or output: OIP carries tensors only."""
    tensors = [o.name for o in session.get_outputs() if o.type.startswith("tensor(")]
    for kind, args in (("input", session.get_inputs()), ("output", session.get_outputs())):
        for arg in args:
            if not arg.type.startswith("tensor("):
                raise BadInput(_non_tensor_message(kind, arg.name, arg.type, tensors))


def _non_tensor_message(kind: str, name: str, type_name: str, tensors: list[str]) -> str:
    fix = (
        "export the model with tensor inputs"
        if kind == "input"
        else "re-export it as a tensor (skl2onnx: options={id(model): {'zipmap': False}}) or without that output"
        + (f" (the tensor outputs: {', '.join(tensors)})" if tensors else "")
    )
    return f"{kind} {name!r} is {type_name}, not a tensor: the Open Inference Protocol carries tensors only; {fix}"


def _to_ort_string(name: str, array: np.ndarray) -> np.ndarray:
    """Object array of bytes → object array of str (what ORT's tensor(string) binding takes)."""
    out = np.empty(array.shape, dtype=object)
    try:
        out.ravel()[:] = [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in array.ravel()]
    except UnicodeDecodeError:
        raise ValueError(f"input {name!r}: a BYTES element is not UTF-8, which tensor(string) needs") from None
    return out


def _to_oip_bytes(array: np.ndarray) -> np.ndarray:
    """ORT's string outputs (str) → object array of UTF-8 bytes, as OIP BYTES."""
    out = np.empty(array.shape, dtype=object)
    out.ravel()[:] = [item.encode("utf-8") if isinstance(item, str) else item for item in array.ravel()]
    return out


class OnnxRuntime:
    """Runs an ``.onnx`` file with one InferenceSession."""

    name: ClassVar[str] = "onnxruntime"

    def __init__(self) -> None:
        self._session: Any = None
        self._output_names: list[str] = []
        self._string_inputs: frozenset[str] = frozenset()
        self._string_outputs: frozenset[str] = frozenset()

    def load(self, path: Path, settings: RuntimeSettings) -> ModelMetadata:
        import onnxruntime as ort

        providers = _check_providers(settings.execution_providers)
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_threads
        options.inter_op_num_threads = settings.inter_op_threads
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[settings.graph_optimization_level]
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        _check_started(self._session, providers)
        _check_tensors(self._session)
        outputs = tuple(_spec(o) for o in self._session.get_outputs())
        self._output_names = [o.name for o in outputs]
        self._string_inputs = frozenset(i.name for i in self._session.get_inputs() if i.type == _STRING)
        self._string_outputs = frozenset(o.name for o in self._session.get_outputs() if o.type == _STRING)
        inputs = tuple(_spec(i) for i in self._session.get_inputs())
        return ModelMetadata(platform="onnxruntime_onnx", inputs=inputs, outputs=outputs)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._string_inputs:
            inputs = {k: _to_ort_string(k, v) if k in self._string_inputs else v for k, v in inputs.items()}
        results = self._session.run(self._output_names, inputs)
        named = dict(zip(self._output_names, results, strict=True))
        for name in self._string_outputs:
            named[name] = _to_oip_bytes(named[name])
        return named
