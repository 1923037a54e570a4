"""The ``onnx`` source: an existing ``.onnx`` file, its schema read from the graph.

Every input and output must be a tensor: a sequence or a map (skl2onnx's default ``ZipMap`` probabilities,
``seq(map(int64,tensor(float)))``) has no OIP datatype, so it is refused here, naming the output and the fix,
rather than failing later in a run or a server. ``options: {outputs: [NAME, ...]}`` keeps only the named
outputs (a trimmed copy of the graph, written to the cache), which also drops an unwanted non-tensor one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
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


def type_text(value_type: onnx.TypeProto) -> str:
    """An ONNX type as ONNX Runtime writes it: ``tensor(float)``, ``seq(map(int64,tensor(float)))``."""
    kind = value_type.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({_element(value_type.tensor_type.elem_type)})"
    if kind == "sequence_type":
        return f"seq({type_text(value_type.sequence_type.elem_type)})"
    if kind == "map_type":
        key = _element(value_type.map_type.key_type)
        return f"map({key},{type_text(value_type.map_type.value_type)})"
    return kind or "unknown"


def _element(elem_type: int) -> str:
    return str(onnx.TensorProto.DataType.Name(elem_type)).lower()


def non_tensor_message(kind: str, name: str, type_name: str, tensors: Sequence[str], where: str) -> str:
    """Why a non-tensor input or output is refused, and what to do instead (shared with the harness's wording)."""
    keep = f"model.options.outputs: [{', '.join(tensors)}]" if tensors else "model.options.outputs: [NAMES]"
    fix = (
        "export it as a tensor (skl2onnx: to_onnx(model, X, options={id(model): {'zipmap': False}}) gives the "
        f"probabilities as a float tensor), drop that output from the graph, or keep only tensor outputs with {keep}"
    )
    if kind == "input":
        fix = "export the model with tensor inputs"
    return f"{where}: {kind} {name!r} is {type_name}, not a tensor (inputs and outputs must be tensors); {fix}"


def check_tensors(model: onnx.ModelProto, where: str) -> None:
    """Refuse a graph with a non-tensor input or output (a sequence, a map), naming it and the fix."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    tensors = [v.name for v in model.graph.output if v.type.WhichOneof("value") == "tensor_type"]
    for kind, values in (("input", inputs), ("output", list(model.graph.output))):
        for value in values:
            if value.type.WhichOneof("value") != "tensor_type":
                raise UsageError(non_tensor_message(kind, value.name, type_text(value.type), tensors, where))


def select_outputs(model: onnx.ModelProto, names: Sequence[str], where: str) -> onnx.ModelProto:
    """A copy of ``model`` whose graph returns only ``names``, without the nodes nothing needs any more."""
    available = [o.name for o in model.graph.output]
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise UsageError(f"{where}: no output {', '.join(map(repr, unknown)) or '(none named)'}; it has {available}")
    trimmed = onnx.ModelProto()
    trimmed.CopyFrom(model)
    kept = [o for o in model.graph.output if o.name in names]
    del trimmed.graph.output[:]
    trimmed.graph.output.extend(kept)
    needed, nodes = set(names), []
    for node in reversed(model.graph.node):  # graph nodes are topologically sorted: walk back from the outputs
        if needed.intersection(node.output):
            nodes.append(node)
            needed.update(node.input)
    del trimmed.graph.node[:]
    trimmed.graph.node.extend(reversed(nodes))
    return trimmed


def _selected(path: Path, model: onnx.ModelProto, spec: ModelSpec, cache: Path) -> tuple[Path, onnx.ModelProto]:
    """The model with ``options.outputs`` applied: a trimmed copy in the cache, or the file itself."""
    names = spec.options.get("outputs")
    if names is None:
        return path, model
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UsageError(f"model.options.outputs: expected a list of output names, got {names!r}")
    if names == [o.name for o in model.graph.output]:
        return path, model
    trimmed = select_outputs(model, names, "model.options.outputs")
    digest = hashlib.sha256(f"{hash_path(path)}|{'|'.join(names)}".encode()).hexdigest()[:16]
    target = cache / "sources" / f"{path.stem}-{digest}.onnx"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        onnx.save(trimmed, str(partial))
        partial.replace(target)  # atomic: a concurrent run reads a whole file or none
    return target, trimmed


@MODEL_SOURCES.register("onnx")
def onnx_source(spec: ModelSpec, cache: Path) -> SourceModel:
    """An existing ONNX file, used in place; with ``options.outputs``, a trimmed copy written under ``cache``."""
    path = Path(spec.path or "").expanduser().resolve()
    if not path.is_file():
        raise UsageError(f"model.path {spec.path!r}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others from protobuf
        raise UsageError(f"model.path {spec.path!r} is not a readable ONNX model: {exc}") from None
    path, model = _selected(path, model, spec, cache)
    check_tensors(model, f"model.path {spec.path}")
    inputs, outputs, axes = onnx_schema(model)
    artifact = Artifact(path=path, format="onnx", content_hash=hash_path(path))
    return SourceModel(artifact=artifact, inputs=inputs, outputs=outputs, dynamic_axes=axes)
