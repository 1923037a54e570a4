"""ONNX Runtime: CPU by default; CUDA and TensorRT execution providers with the [gpu] extra."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from serving_harness.runtimes.base import ModelMetadata, RuntimeUnavailable, TensorSpec
from serving_harness.settings import RuntimeSettings

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


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(name=arg.name, datatype=_ORT_TO_OIP.get(arg.type, arg.type), shape=shape)


def _check_providers(wanted: tuple[str, ...]) -> list[str]:
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    missing = [p for p in wanted if p not in available]
    if missing:
        raise RuntimeUnavailable(
            f"ONNX Runtime here lacks {', '.join(missing)} (has {', '.join(sorted(available))}); "
            "install the [gpu] extra on a CUDA machine (pip uninstall -y onnxruntime first)"
        )
    return list(wanted)


class OnnxRuntime:
    """Runs an ``.onnx`` file with one InferenceSession."""

    name: ClassVar[str] = "onnxruntime"

    def __init__(self) -> None:
        self._session: Any = None
        self._output_names: list[str] = []

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
        outputs = tuple(_spec(o) for o in self._session.get_outputs())
        self._output_names = [o.name for o in outputs]
        inputs = tuple(_spec(i) for i in self._session.get_inputs())
        return ModelMetadata(platform="onnxruntime_onnx", inputs=inputs, outputs=outputs)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._session.run(self._output_names, inputs)
        return dict(zip(self._output_names, results, strict=True))
