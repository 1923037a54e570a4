"""The ``onnx`` source: an existing ``.onnx`` file, its schema read from the graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from serving_harness.runtimes.base import NUMPY_TO_OIP, TensorSpec
from workbench.artifact import Artifact, hash_path
from workbench.errors import UsageError
from workbench.models.base import MODEL_SOURCES, SourceModel
from workbench.recipe.spec import ModelSpec


def onnx_schema(
    model: onnx.ModelProto,
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], dict[str, dict[int, str]]]:
    """Inputs (initializers excluded), outputs and named dynamic axes of an ONNX graph.

    A symbolic or unknown dimension is -1; its name is the graph's ``dim_param``, or ``batch`` for
    axis 0 and ``<tensor>_dim<axis>`` otherwise.
    """
    initializers = {init.name for init in model.graph.initializer}
    values = [v for v in model.graph.input if v.name not in initializers]
    inputs = tuple(_tensor_spec(v) for v in values)
    outputs = tuple(_tensor_spec(v) for v in model.graph.output)
    axes = {v.name: _dynamic_axes(v) for v in (*values, *model.graph.output)}
    return inputs, outputs, axes


def _dims(value: onnx.ValueInfoProto) -> list[Any]:
    return list(value.type.tensor_type.shape.dim)


def _tensor_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type))
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in _dims(value))
    return TensorSpec(name=value.name, datatype=NUMPY_TO_OIP.get(dtype, str(dtype)), shape=shape)


def _dynamic_axes(value: onnx.ValueInfoProto) -> dict[int, str]:
    axes: dict[int, str] = {}
    for axis, dim in enumerate(_dims(value)):
        if dim.HasField("dim_value"):
            continue
        default = "batch" if axis == 0 else f"{value.name}_dim{axis}"
        axes[axis] = dim.dim_param or default
    return axes


@MODEL_SOURCES.register("onnx")
def onnx_source(spec: ModelSpec, cache: Path) -> SourceModel:
    """An existing ONNX file, used in place (``cache`` is not needed)."""
    path = Path(spec.path or "").expanduser().resolve()
    if not path.is_file():
        raise UsageError(f"model.path {spec.path!r}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others from protobuf
        raise UsageError(f"model.path {spec.path!r} is not a readable ONNX model: {exc}") from None
    inputs, outputs, axes = onnx_schema(model)
    artifact = Artifact(path=path, format="onnx", content_hash=hash_path(path))
    return SourceModel(artifact=artifact, inputs=inputs, outputs=outputs, dynamic_axes=axes)
