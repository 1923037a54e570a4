"""Open Inference Protocol v2 codec: JSON tensors and the binary tensor data extension.

Server side: ``decode_infer_request`` checks a request against a ``ModelSchema`` (names, datatypes,
shapes, sizes; any mismatch raises ``InvalidRequest``) and ``encode_infer_response`` writes the answer.
Client side (tests, benchmarks, the workbench's load engine): ``encode_infer_request`` and
``decode_infer_response``.

Binary extension (as Triton): a body whose first ``Inference-Header-Content-Length`` bytes are the JSON
header, followed by the raw tensors in input order; an input with ``parameters.binary_data_size`` takes
its bytes from there. Outputs are binary when the request asks with ``parameters.binary_data_output``
or, per output, ``outputs[i].parameters.binary_data``. BYTES elements are 4-byte little-endian length
prefixed. Numbers are little-endian, row-major.

Non-finite numbers: JSON has no NaN or infinity (a JSON encoder writes ``null``, which reads back as
nothing or 0), so in JSON ``data`` they are the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``
(what ``float()``, numpy's ``np.array(data, dtype=...)``, as tritonclient and KServe's client decode
``data``, and JavaScript's ``Number()`` all read back as the same value). Requests may use them too. A
JSON number outside a float type's range (1e39 as FP32) is refused rather than turned into infinity. The
binary extension carries every value exactly, NaN payloads included.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from serving_harness.errors import InvalidRequest
from serving_harness.runtimes.base import NUMPY_TO_OIP, OIP_TO_NUMPY, ModelMetadata, TensorSpec

__all__ = [
    "HEADER_LENGTH",
    "NONFINITE_NAMES",
    "InferRequest",
    "ModelSchema",
    "RequestedOutput",
    "decode_infer_request",
    "decode_infer_response",
    "encode_infer_request",
    "encode_infer_response",
    "nonfinite_count",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
_NUMPY_OPTION = orjson.OPT_SERIALIZE_NUMPY
# Which numpy kinds (as parsed from JSON) each datatype kind accepts.
_ACCEPTED_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}
_LENGTH = struct.Struct("<I")
NONFINITE_NAMES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}  # JSON spellings
# The largest finite value of each float type: a finite number within it casts without overflowing.
_FLOAT_MAX: dict[np.dtype[Any], float] = {
    np.dtype(t): float(np.finfo(t).max) for t in (np.float16, np.float32, np.float64)
}


def nonfinite_count(array: np.ndarray) -> int:
    """NaN and infinite values in ``array`` (0 for any type but floats)."""
    if array.dtype.kind != "f":
        return 0
    return int(array.size - np.count_nonzero(np.isfinite(array)))  # one C pass each: cheaper than .all() first


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An output the client asked for, and whether it wants it as binary data."""

    name: str
    binary: bool


@dataclass(slots=True)
class InferRequest:
    """A decoded, validated inference request."""

    inputs: dict[str, np.ndarray]
    rows: int
    id: str | None = None
    outputs: tuple[RequestedOutput, ...] | None = None
    binary_output: bool = False
    parameters: dict[str, Any] | None = None
    # NaN and infinities among the inputs when the decoder knows (JSON: only the spelled-out ones), else None
    nonfinite_inputs: int | None = None


class ModelSchema:
    """What a model accepts and returns, precomputed from its metadata for fast validation."""

    def __init__(self, metadata: ModelMetadata) -> None:
        self.metadata = metadata
        self.inputs: dict[str, TensorSpec] = {t.name: t for t in metadata.inputs}
        self.outputs: dict[str, TensorSpec] = {t.name: t for t in metadata.outputs}
        self.input_names = tuple(self.inputs)
        self.output_names = tuple(self.outputs)
        tensors = (*metadata.inputs, *metadata.outputs)
        self.batched = all(len(t.shape) > 0 and t.shape[0] == -1 for t in tensors)
        self.all_outputs = {
            binary: tuple(RequestedOutput(n, binary) for n in self.output_names) for binary in (False, True)
        }

    def wanted_outputs(self, request: InferRequest) -> tuple[RequestedOutput, ...]:
        """The outputs to return: those requested, else all of them."""
        return request.outputs or self.all_outputs[request.binary_output]


# ----------------------------------------------------------------------------------------------- server


def decode_infer_request(body: bytes, header_length: int | None, schema: ModelSchema) -> InferRequest:
    """Parse and validate an infer request body; raise InvalidRequest on any mismatch with the model."""
    doc, binary = _split_body(body, header_length)
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidRequest("'inputs' must be a non-empty list")
    inputs, nonfinite = _decode_inputs(raw_inputs, schema, binary)
    request = InferRequest(inputs, _batch_rows(inputs, schema), nonfinite_inputs=nonfinite)
    if len(doc) > 1:  # most requests carry inputs only: the optional fields' checks are skipped whole
        _decode_options(doc, schema, request)
    return request


def _decode_inputs(
    raw_inputs: list[Any], schema: ModelSchema, binary: memoryview
) -> tuple[dict[str, np.ndarray], int | None]:
    """The request's tensors by name, every model input given once, and their non-finite values when known."""
    reader = _BinaryReader(binary) if binary else _NO_BINARY
    inputs: dict[str, np.ndarray] = {}
    nonfinite: int | None = 0
    for raw in raw_inputs:
        name, array, count = _decode_input(raw, schema, reader)
        if name in inputs:
            raise InvalidRequest(f"input {name!r} is given twice")
        inputs[name] = array
        nonfinite = None if count is None or nonfinite is None else nonfinite + count
    if reader is not _NO_BINARY:  # the shared empty reader has nothing left over by construction
        reader.finish()
    if len(inputs) != len(schema.inputs):
        missing = [n for n in schema.input_names if n not in inputs]
        raise InvalidRequest(f"missing input(s) {', '.join(map(repr, missing))}")
    return inputs, nonfinite


def _decode_options(doc: dict[str, Any], schema: ModelSchema, request: InferRequest) -> None:
    """The request's ``parameters``, ``id`` and ``outputs`` into ``request``, each checked."""
    parameters = _parameters(doc.get("parameters"), "request")
    request.binary_output = bool(parameters.get("binary_data_output", False)) if parameters else False
    request.parameters = parameters
    request.id = _request_id(doc.get("id"))
    request.outputs = _requested_outputs(doc.get("outputs"), schema, request.binary_output)


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: Mapping[str, np.ndarray],
    schema: ModelSchema,
    nonfinite_outputs: Collection[str] | None = None,
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it (else None).

    ``nonfinite_outputs``: the outputs that hold NaN or infinities, when the caller has counted them
    already (``ServedModel.answer`` does); None: each JSON output is looked at here.
    """
    entries: list[dict[str, Any]] = []
    buffers: list[Any] = []
    for wanted in schema.wanted_outputs(request):
        array = outputs[wanted.name]
        datatype = NUMPY_TO_OIP.get(array.dtype) or schema.outputs[wanted.name].datatype
        nonfinite = None if nonfinite_outputs is None else wanted.name in nonfinite_outputs
        entries.append(_output_entry(wanted, array, datatype, buffers, nonfinite))
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": entries}
    if request.id is not None:
        doc["id"] = request.id
    header = orjson.dumps(doc, option=_NUMPY_OPTION)
    if not buffers:
        return header, None
    return b"".join([header, *buffers]), len(header)


def _output_entry(
    wanted: RequestedOutput, array: np.ndarray, datatype: str, buffers: list[Any], nonfinite: bool | None = None
) -> dict[str, Any]:
    """``nonfinite``: whether ``array`` holds NaN or infinities (None: not known, looked at when JSON)."""
    entry: dict[str, Any] = {"name": wanted.name, "datatype": datatype, "shape": list(array.shape)}
    if wanted.binary:
        buffer = _binary_data(array)
        entry["parameters"] = {"binary_data_size": len(buffer)}  # a 1-D uint8 array or bytes
        buffers.append(buffer)
    else:
        entry["data"] = _json_data(array, nonfinite)
    return entry


def _split_body(body: bytes, header_length: int | None) -> tuple[dict[str, Any], memoryview]:
    if header_length is None:
        json_part: bytes | memoryview = body
        binary = _EMPTY
    else:
        if not 0 < header_length <= len(body):
            raise InvalidRequest(f"{HEADER_LENGTH} {header_length} does not fit a body of {len(body)} bytes")
        view = memoryview(body)
        json_part, binary = view[:header_length], view[header_length:]
    try:
        doc = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("the request must be a JSON object")
    return doc, binary


def _decode_input(raw: Any, schema: ModelSchema, reader: _BinaryReader) -> tuple[str, np.ndarray, int | None]:
    """The input's name, its tensor, and its non-finite values when known (binary data: None, not looked at)."""
    if not isinstance(raw, dict):
        raise InvalidRequest("each input must be a JSON object")
    name = raw.get("name")
    spec = schema.inputs.get(name) if isinstance(name, str) else None
    if spec is None:
        raise InvalidRequest(f"unknown input {name!r}; the model takes {', '.join(map(repr, schema.input_names))}")
    datatype = raw.get("datatype")
    if datatype != spec.datatype:
        raise InvalidRequest(f"input {name!r} has datatype {datatype!r}; the model expects {spec.datatype}")
    shape = _checked_shape(spec, raw.get("shape"))
    parameters = raw.get("parameters")
    if parameters is not None:  # most inputs have none: their message is not even formatted
        parameters = _parameters(parameters, f"input {name!r}")
    size = parameters.get("binary_data_size") if parameters else None
    if size is not None:
        return spec.name, _tensor_from_binary(spec.name, reader.take(spec.name, size), datatype, shape), None
    return spec.name, *_json_tensor(spec.name, raw.get("data"), datatype, shape)


def _checked_shape(spec: TensorSpec, shape: Any) -> tuple[int, ...]:
    expected = spec.shape
    if type(shape) is not list or len(shape) != len(expected):
        raise InvalidRequest(f"input {spec.name!r} has shape {shape}; the model expects {list(expected)} (-1: any)")
    for got, want in zip(shape, expected, strict=True):
        if type(got) is not int or got < 0 or (want != -1 and got != want):
            raise InvalidRequest(f"input {spec.name!r} has shape {shape}; the model expects {list(expected)} (-1: any)")
    return tuple(shape)


def _parameters(raw: Any, where: str) -> dict[str, Any] | None:
    if raw is None or isinstance(raw, dict):
        return raw
    raise InvalidRequest(f"'parameters' of the {where} must be a JSON object")


def _request_id(raw: Any) -> str | None:
    if raw is None or isinstance(raw, str):
        return raw
    raise InvalidRequest("'id' must be a string")


def _batch_rows(inputs: dict[str, np.ndarray], schema: ModelSchema) -> int:
    if not schema.batched:
        return 1
    if len(inputs) == 1:  # most models take one input: nothing to agree on
        (array,) = inputs.values()
        batch = int(array.shape[0])
    else:
        rows = {int(array.shape[0]) for array in inputs.values()}
        if len(rows) != 1:
            raise InvalidRequest(f"the inputs disagree on the batch size (first axis): {sorted(rows)}")
        batch = rows.pop()
    if batch < 1:
        raise InvalidRequest("the batch size (first axis) must be at least 1")
    return batch


def _requested_outputs(raw: Any, schema: ModelSchema, binary_default: bool) -> tuple[RequestedOutput, ...] | None:
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list):
        raise InvalidRequest("'outputs' must be a list")
    wanted = []
    for item in raw:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in schema.outputs:
            known = ", ".join(map(repr, schema.output_names))
            raise InvalidRequest(f"unknown output {name!r}; the model returns {known}")
        parameters = _parameters(item.get("parameters"), f"output {name!r}")
        binary = parameters.get("binary_data", binary_default) if parameters else binary_default
        wanted.append(RequestedOutput(name, bool(binary)))
    return tuple(wanted)


class _BinaryReader:
    """Hands out consecutive slices of the binary section, in input order."""

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._offset = 0

    def take(self, name: str, size: Any) -> memoryview:
        if type(size) is not int or size < 0:
            raise InvalidRequest(f"input {name!r}: binary_data_size must be a non-negative integer")
        end = self._offset + size
        if end > len(self._data):
            raise InvalidRequest(f"input {name!r}: binary_data_size {size} runs past the end of the body")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def finish(self) -> None:
        extra = len(self._data) - self._offset
        if extra:
            raise InvalidRequest(f"{extra} bytes of binary data follow the last binary input")


_EMPTY = memoryview(b"")
# The reader of a body without binary data: only zero-byte takes succeed, so it never changes and is shared.
_NO_BINARY = _BinaryReader(_EMPTY)


# ------------------------------------------------------------------------------------- tensors, both ways


def _tensor_from_json(name: str, data: Any, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    return _json_tensor(name, data, datatype, shape)[0]


def _json_tensor(name: str, data: Any, datatype: str, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """The tensor JSON ``data`` holds, and how many of its values are NaN or infinite: JSON numbers are
    finite (``_cast`` refuses one that overflows the type), so only the spelled-out strings can be."""
    if data is None:
        raise InvalidRequest(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
    nonfinite = 0
    if datatype == "BYTES":
        array = _bytes_from_json(name, data)
    else:
        try:
            parsed = np.array(data)
        except (ValueError, TypeError) as exc:
            raise InvalidRequest(f"input {name!r}: 'data' is not a regular array ({exc})") from None
        dtype = OIP_TO_NUMPY[datatype]
        if dtype.kind == "f" and parsed.dtype.kind == "U":  # numbers mixed with "NaN", "Infinity", "-Infinity"
            array, nonfinite = _with_nonfinite(name, parsed, dtype, datatype)
        else:
            array = _cast(name, parsed, dtype, datatype)
    count = math.prod(shape)
    if array.size != count:
        raise InvalidRequest(f"input {name!r} has {array.size} elements; shape {list(shape)} needs {count}")
    return array.reshape(shape), nonfinite


def _cast(name: str, parsed: np.ndarray, dtype: np.dtype[Any], datatype: str) -> np.ndarray:
    if parsed.dtype.kind == "f" and dtype.kind == "f" and parsed.size:  # numbers for a float input: checked first
        if parsed.dtype == dtype or np.abs(parsed).max() <= _FLOAT_MAX[dtype]:
            return parsed.astype(dtype, copy=False)  # JSON numbers are finite: within the range, none overflows
        return _narrowed(name, parsed, dtype, datatype)
    if parsed.size == 0:
        return parsed.astype(dtype)
    if parsed.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
        raise InvalidRequest(f"input {name!r}: 'data' holds {parsed.dtype} values, not {datatype}")
    if dtype.kind in "iu" and parsed.dtype != dtype:
        info = np.iinfo(dtype)
        if parsed.min() < info.min or parsed.max() > info.max:
            raise InvalidRequest(f"input {name!r}: 'data' holds values outside the range of {datatype}")
    if dtype.kind != "f":
        return parsed.astype(dtype, copy=False)
    return _narrowed(name, parsed, dtype, datatype)  # integers for a float input


def _narrowed(name: str, parsed: np.ndarray, dtype: np.dtype[Any], datatype: str) -> np.ndarray:
    """``parsed`` cast to the float ``dtype``; InvalidRequest when a value overflows it (the exact check)."""
    with np.errstate(over="ignore"):  # an overflow is refused below, with a message, not warned about
        array = parsed.astype(dtype)
    if nonfinite_count(array):
        raise InvalidRequest(
            f"input {name!r}: 'data' holds values outside the range of {datatype} "
            '(send "Infinity", "-Infinity" or "NaN" for non-finite values)'
        )
    return array


def _with_nonfinite(name: str, parsed: np.ndarray, dtype: np.dtype[Any], datatype: str) -> tuple[np.ndarray, int]:
    """Float data where some items are the JSON spellings of NaN and the infinities (the rest: numbers),
    and how many values are not finite: exactly the spelled ones (a number that overflows is refused)."""
    items = parsed.ravel().tolist()
    values = [
        NONFINITE_NAMES[text] if text in NONFINITE_NAMES else _finite_number(name, text, datatype) for text in items
    ]
    with np.errstate(over="ignore"):
        array = np.array(values, dtype=dtype).reshape(parsed.shape)
    nonfinite = nonfinite_count(array)
    if nonfinite > sum(text in NONFINITE_NAMES for text in items):
        raise InvalidRequest(f"input {name!r}: 'data' holds values outside the range of {datatype}")
    return array, nonfinite


def _finite_number(name: str, text: str, datatype: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = math.nan  # "true", "abc": refused below with the spellings that work
    if not math.isfinite(number):  # "nan", "inf": only the three JSON spellings stand for non-finite values
        raise InvalidRequest(f'input {name!r}: {text!r} is not {datatype} (numbers, "NaN", "Infinity", "-Infinity")')
    return number


def _bytes_from_json(name: str, data: Any) -> np.ndarray:
    items = list(_flatten(data))
    if not all(isinstance(item, str) for item in items):
        raise InvalidRequest(f"input {name!r}: BYTES 'data' must hold strings")
    array = np.empty(len(items), dtype=object)
    array[:] = [item.encode() for item in items]
    return array


def _flatten(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def _tensor_from_binary(name: str, buffer: memoryview, datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        array = _bytes_from_binary(name, buffer)
        if array.size != count:
            raise InvalidRequest(f"input {name!r} has {array.size} elements; shape {list(shape)} needs {count}")
        return array.reshape(shape)
    dtype = OIP_TO_NUMPY[datatype]
    if len(buffer) != count * dtype.itemsize:
        needed = count * dtype.itemsize
        raise InvalidRequest(
            f"input {name!r}: {len(buffer)} bytes of binary data; {datatype}{list(shape)} needs {needed}"
        )
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _bytes_from_binary(name: str, buffer: memoryview) -> np.ndarray:
    items: list[bytes] = []
    offset = 0
    while offset < len(buffer):
        if offset + 4 > len(buffer):
            raise InvalidRequest(f"input {name!r}: truncated BYTES element length")
        (length,) = _LENGTH.unpack_from(buffer, offset)
        start, offset = offset + 4, offset + 4 + length
        if offset > len(buffer):
            raise InvalidRequest(f"input {name!r}: a BYTES element runs past its binary data")
        items.append(bytes(buffer[start:offset]))
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _json_data(array: np.ndarray, nonfinite: bool | None = None) -> Any:
    """``array`` as orjson writes it; ``nonfinite``: whether it holds NaN or infinities (None: look)."""
    if array.dtype == object:
        return [_text(item) for item in array.ravel()]
    if nonfinite or (nonfinite is None and nonfinite_count(array)):
        return [_json_float(value) for value in array.ravel().tolist()]  # orjson would write null
    return np.ascontiguousarray(array).ravel()  # orjson writes numpy arrays natively


def _json_float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _text(item: Any) -> str:
    # JSON carries text; bytes that are not UTF-8 need the binary extension to come back exactly.
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


def _binary_data(array: np.ndarray) -> Any:
    if array.dtype == object:
        parts = [item if isinstance(item, bytes) else str(item).encode() for item in array.ravel()]
        return b"".join(_LENGTH.pack(len(part)) + part for part in parts)
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


# ----------------------------------------------------------------------------------------------- client


def encode_infer_request(
    inputs: Mapping[str, np.ndarray],
    *,
    binary_data: bool = False,
    outputs: Sequence[str] | None = None,
    binary_data_output: bool = False,
    request_id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """An infer request body and its headers (Content-Type, and the header length when binary)."""
    entries: list[dict[str, Any]] = []
    buffers: list[Any] = []
    for name, array in inputs.items():
        wanted = RequestedOutput(name, binary_data)
        entries.append(_output_entry(wanted, array, NUMPY_TO_OIP[array.dtype], buffers))
    doc: dict[str, Any] = {"inputs": entries}
    if request_id is not None:
        doc["id"] = request_id
    merged = {**(parameters or {}), **({"binary_data_output": True} if binary_data_output else {})}
    if merged:
        doc["parameters"] = merged
    if outputs is not None:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": binary_data_output}} for n in outputs]
    header = orjson.dumps(doc, option=_NUMPY_OPTION)
    if not buffers:
        return header, {"Content-Type": "application/json"}
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return b"".join([header, *buffers]), headers


def decode_infer_response(body: bytes, header_length: int | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The response's JSON document and its outputs as arrays (binary or JSON data)."""
    doc, binary = _split_body(body, header_length)
    reader = _BinaryReader(binary)
    arrays: dict[str, np.ndarray] = {}
    for entry in doc.get("outputs", []):
        name, datatype, shape = entry["name"], entry["datatype"], tuple(entry["shape"])
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is None:
            arrays[name] = _tensor_from_json(name, entry.get("data"), datatype, shape)
        else:
            arrays[name] = _tensor_from_binary(name, reader.take(name, size), datatype, shape)
    return doc, arrays
