"""The load generator's gRPC client (used inside Locust, under gevent): OIP v2 ``ModelInfer`` over one channel.

The prepared REST payloads (JSON or binary OIP bodies, see ``payloads``) are converted once into
serialized ``ModelInferRequest`` messages with ``raw_input_contents`` (what Triton's client sends),
so a gRPC step sends the very tensors its REST twin does. The hot path sends those bytes through a
method with no serializer and times the call alone, as ``wire_http`` does: the clock starts just before
the call and stops when the whole answer is in; the answer is parsed only after that, to check it.

grpcio blocks its caller's OS thread unless told about gevent: ``GrpcWire`` calls
``grpc.experimental.gevent.init_gevent()`` before the process makes its first channel.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np

from serving_harness.protocol.codec import HEADER_LENGTH, _binary_data, _split_body, _tensor_from_json
from serving_harness.protocol.grpc_gen import grpc_predict_v2_pb2 as pb
from workbench.measure.load.wire import Kind

__all__ = ["INFER_METHOD", "GrpcWire", "grpc_request", "kind_of_code"]

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
_gevent_ready: list[bool] = []
_CODE_KINDS = {
    grpc.StatusCode.DEADLINE_EXCEEDED: Kind.TIMEOUT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Kind.HTTP_429,
    grpc.StatusCode.INTERNAL: Kind.HTTP_5XX,
    grpc.StatusCode.UNKNOWN: Kind.HTTP_5XX,
    grpc.StatusCode.DATA_LOSS: Kind.HTTP_5XX,
    grpc.StatusCode.CANCELLED: Kind.CONNECTION,
}


def kind_of_code(code: grpc.StatusCode, details: str) -> Kind:
    """The kind of a failed call, as ``wire.kind_of_status`` reads an HTTP status.

    UNAVAILABLE is both what the server answers when overloaded or not ready (503 over REST) and what
    gRPC reports when it cannot reach the server: the details tell them apart.
    """
    if code is grpc.StatusCode.UNAVAILABLE:
        lowered = details.lower()
        unreachable = any(word in lowered for word in ("connect", "socket", "reset", "unreachable"))
        return Kind.CONNECTION if unreachable else Kind.HTTP_503
    return _CODE_KINDS.get(code, Kind.HTTP_4XX)


def grpc_request(model: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A prepared OIP REST infer body (JSON or binary) as a serialized ``ModelInferRequest``, raw tensors."""
    length = next((v for k, v in headers.items() if k.lower() == HEADER_LENGTH.lower()), None)
    doc, binary = _split_body(body, int(length) if length is not None else None)
    request = pb.ModelInferRequest(model_name=model, id=str(doc.get("id") or ""))
    offset = 0
    for entry in doc["inputs"]:
        shape = tuple(entry["shape"])
        request.inputs.add(name=entry["name"], datatype=entry["datatype"], shape=shape)
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is None:
            array = _tensor_from_json(entry["name"], entry.get("data"), entry["datatype"], shape)
            request.raw_input_contents.append(_raw(array))
        else:
            request.raw_input_contents.append(bytes(binary[offset : offset + size]))
            offset += size
    serialized: bytes = request.SerializeToString()
    return serialized


def _raw(array: np.ndarray) -> bytes:
    data = _binary_data(array)  # bytes (BYTES) or a uint8 view
    raw: bytes = data if isinstance(data, bytes) else data.tobytes()
    return raw


class GrpcWire:
    """One channel to ``target`` that sends the prepared requests; ``call(i)`` -> (start, end, kind, size)."""

    def __init__(self, target: str, requests: Sequence[bytes], timeout_s: float) -> None:
        _init_gevent()
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", -1)])
        self.infer = self.channel.unary_unary(INFER_METHOD)  # no (de)serializer: bytes in, bytes out
        self.requests = list(requests)
        self.timeout_s = timeout_s

    def call(self, index: int) -> tuple[int, int, Kind, int]:
        start_ns = time.monotonic_ns()
        try:
            answer: bytes = self.infer(self.requests[index], timeout=self.timeout_s)
        except grpc.RpcError as exc:
            end_ns = time.monotonic_ns()
            return start_ns, end_ns, _failure_kind(exc), 0
        end_ns = time.monotonic_ns()
        return start_ns, end_ns, _answer_kind(answer), len(answer)

    def close(self) -> None:
        self.channel.close()


def _failure_kind(exc: Any) -> Kind:
    """A failed call's error is also a ``grpc.Call``: its code and details."""
    return kind_of_code(exc.code(), exc.details() or "")


def _answer_kind(answer: bytes) -> Kind:
    try:
        return Kind.OK if pb.ModelInferResponse.FromString(answer).outputs else Kind.BAD_RESPONSE
    except Exception:  # protobuf's DecodeError: not an answer
        return Kind.BAD_RESPONSE


def _init_gevent() -> None:
    """Let grpcio yield to other greenlets while it waits (once per process, before any channel)."""
    if _gevent_ready:
        return
    from grpc.experimental import gevent as grpc_gevent

    grpc_gevent.init_gevent()
    _gevent_ready.append(True)
