"""Open Inference Protocol v2 tensors over gRPC: ``ModelInferRequest`` in, ``ModelInferResponse`` out.

The same checks as the REST codec (``codec``): names, datatypes, shapes and sizes against the model's
``ModelSchema``, each mismatch an ``InvalidRequest`` (INVALID_ARGUMENT). Inputs come either all as
``raw_input_contents`` (one entry per input, in input order: little-endian row-major elements, BYTES
elements 4-byte length prefixed, as the binary extension) or each in the typed field of its datatype
(``contents.fp32_contents``...). FP16 has no typed field: raw only.

Outputs answer in kind: ``raw_output_contents`` when the request sent raw inputs (what Triton's client
sends, and the only form it reads) or when an output has no typed field (FP16); the typed ``contents``
otherwise (KServe's clients read both).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from serving_harness.errors import InvalidRequest
from serving_harness.protocol.codec import (
    InferRequest,
    ModelSchema,
    RequestedOutput,
    _batch_rows,
    _binary_data,
    _cast,
    _checked_shape,
    _tensor_from_binary,
)
from serving_harness.protocol.grpc_gen import grpc_predict_v2_pb2 as pb
from serving_harness.runtimes.base import NUMPY_TO_OIP, OIP_TO_NUMPY

__all__ = ["decode_grpc_request", "encode_grpc_response", "parameters_dict"]

# The typed field of InferTensorContents that carries each datatype (FP16 and BF16: none, raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_FLOAT_FIELDS = frozenset({"fp32_contents", "fp64_contents"})


def decode_grpc_request(request: pb.ModelInferRequest, schema: ModelSchema) -> InferRequest:
    """Validate ``request`` against ``schema``; ``binary_output`` of the result says: answer raw."""
    if not request.inputs:
        raise InvalidRequest("'inputs' must be a non-empty list")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: give one per input")
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        name, array = _decode_input(tensor, raw[index] if raw else None, schema)
        if name in inputs:
            raise InvalidRequest(f"input {name!r} is given twice")
        inputs[name] = array
    if len(inputs) != len(schema.inputs):
        missing = [n for n in schema.input_names if n not in inputs]
        raise InvalidRequest(f"missing input(s) {', '.join(map(repr, missing))}")
    binary = bool(raw) or any(t.datatype not in CONTENTS_FIELD for t in schema.metadata.outputs)
    return InferRequest(
        inputs=inputs,
        rows=_batch_rows(inputs, schema),
        id=request.id or None,
        outputs=_requested_outputs(request, schema, binary),
        binary_output=binary,
        parameters=parameters_dict(request.parameters) or None,
    )


def _decode_input(
    tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, schema: ModelSchema
) -> tuple[str, np.ndarray]:
    spec = schema.inputs.get(tensor.name)
    if spec is None:
        raise InvalidRequest(
            f"unknown input {tensor.name!r}; the model takes {', '.join(map(repr, schema.input_names))}"
        )
    if tensor.datatype != spec.datatype:
        raise InvalidRequest(f"input {spec.name!r} has datatype {tensor.datatype!r}; the model expects {spec.datatype}")
    shape = _checked_shape(spec, list(tensor.shape))
    if raw is not None:
        return spec.name, _tensor_from_binary(spec.name, memoryview(raw), spec.datatype, shape)
    return spec.name, _tensor_from_contents(spec.name, tensor.contents, spec.datatype, shape)


def _tensor_from_contents(
    name: str, contents: pb.InferTensorContents, datatype: str, shape: tuple[int, ...]
) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidRequest(f"input {name!r}: {datatype} has no typed contents; send it in raw_input_contents")
    values = getattr(contents, field)
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
    elif field in _FLOAT_FIELDS:  # the type's own values, NaN and infinities included: nothing to check
        array = np.array(values, dtype=OIP_TO_NUMPY[datatype])
    else:
        array = _cast(name, np.array(values), OIP_TO_NUMPY[datatype], datatype)  # INT8 from int32: range checked
    count = math.prod(shape)
    if array.size != count:
        raise InvalidRequest(
            f"input {name!r} has {array.size} elements in contents.{field}; shape {list(shape)} needs {count}"
        )
    return array.reshape(shape)


def _requested_outputs(
    request: pb.ModelInferRequest, schema: ModelSchema, binary: bool
) -> tuple[RequestedOutput, ...] | None:
    if not request.outputs:
        return schema.all_outputs[binary]
    wanted = []
    for output in request.outputs:
        if output.name not in schema.outputs:
            known = ", ".join(map(repr, schema.output_names))
            raise InvalidRequest(f"unknown output {output.name!r}; the model returns {known}")
        wanted.append(RequestedOutput(output.name, binary))
    return tuple(wanted)


def parameters_dict(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """A protobuf parameter map as plain values."""
    found: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is not None:
            found[key] = getattr(parameter, choice)
    return found


def encode_grpc_response(
    *,
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: Mapping[str, np.ndarray],
    schema: ModelSchema,
) -> pb.ModelInferResponse:
    """The answer to ``request``: raw outputs when ``request.binary_output``, typed contents otherwise."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request.id or "")
    for wanted in schema.wanted_outputs(request):
        array = outputs[wanted.name]
        datatype = NUMPY_TO_OIP.get(array.dtype) or schema.outputs[wanted.name].datatype
        tensor = response.outputs.add(name=wanted.name, datatype=datatype, shape=array.shape)
        if request.binary_output:
            data = _binary_data(array)
            response.raw_output_contents.append(data if isinstance(data, bytes) else data.tobytes())
        else:
            _fill_contents(tensor.contents, array, datatype)
    return response


def _fill_contents(contents: pb.InferTensorContents, array: np.ndarray, datatype: str) -> None:
    values = getattr(contents, CONTENTS_FIELD[datatype])
    if datatype == "BYTES":
        values.extend(item if isinstance(item, bytes) else str(item).encode() for item in array.ravel())
    else:
        values.extend(array.ravel().tolist())
