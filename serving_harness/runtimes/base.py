"""The Runtime protocol: one class, one hot method.

A runtime loads one model artifact and runs whole batches (batch dimension first). Nothing else is
required of a plugin; the batcher, the protocol codec and the workbench's in-process measurement all
drive a runtime only through ``load`` and ``infer``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from serving_harness.config import RuntimeSettings
from serving_harness.errors import RuntimeUnavailable as RuntimeUnavailable  # its old home: re-exported

# OIP v2 datatypes and their numpy dtypes (BYTES is carried as object arrays of bytes).
OIP_TO_NUMPY: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
NUMPY_TO_OIP: dict[np.dtype[np.generic], str] = {v: k for k, v in OIP_TO_NUMPY.items()}


class TensorSpec(BaseModel):
    """One input or output: OIP datatype and shape, -1 for a dynamic axis (the batch axis first)."""

    model_config = ConfigDict(frozen=True)

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def numpy_dtype(self) -> np.dtype[np.generic]:
        return OIP_TO_NUMPY[self.datatype]


class ModelMetadata(BaseModel):
    """What a loaded model accepts and returns."""

    model_config = ConfigDict(frozen=True)

    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@runtime_checkable
class Runtime(Protocol):
    """Loads one artifact and runs whole batches."""

    name: ClassVar[str]

    def load(self, path: Path, settings: RuntimeSettings) -> ModelMetadata:
        """Load the artifact at ``path``; return its input and output schema."""
        ...

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch (batch dimension first); return every output by name."""
        ...
