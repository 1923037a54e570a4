"""The Open Inference Protocol v2 over gRPC (``inference.GRPCInferenceService``) and ``grpc.health.v1``.

Served by the same process as REST, on the same event loop: ``create_app(..., grpc=GrpcListener(...))``
starts a ``grpc.aio`` server in the app's lifespan, beside uvicorn, so a gRPC call reaches the very
model objects, batchers, caches, fallbacks, canary split, auth, rate limiter and metrics a REST
request does (the batcher hands results back on the loop it runs on: one loop, no thread hop). On
shutdown uvicorn drains HTTP first, then the gRPC server stops accepting and gives in-flight calls up
to ``limits.request_timeout_s``, then the models close.

Methods (stubs in ``grpc_gen``, from the proto as KServe publishes it)::

    ServerLive, ServerReady                   open (as /v2/health/*)
    ServerMetadata, ModelMetadata, ModelReady the bearer token when auth is on
    ModelInfer                                the bearer token, then the rate limit; typed or raw tensors
    RepositoryModelLoad / Unload              UNIMPLEMENTED (the models are fixed at start)
    grpc.health.v1.Health Check / Watch       open; SERVING once every model serves ("" or the service name)

Auth: metadata ``authorization: Bearer <token>``. The rate limit is per verified identity, shared
with REST: the token with auth on, the peer address otherwise. Errors keep their REST meaning, as
gRPC codes: 400 INVALID_ARGUMENT, 401 UNAUTHENTICATED, 404 NOT_FOUND, 429 and 413 RESOURCE_EXHAUSTED
(with ``retry-after`` trailing metadata where REST sends Retry-After), 500 INTERNAL, 503 UNAVAILABLE,
504 DEADLINE_EXCEEDED; metrics count them under their HTTP status with ``protocol="grpc"``. Limits:
a message over ``limits.max_body_bytes`` is refused by gRPC itself (RESOURCE_EXHAUSTED);
``limits.request_timeout_s`` bounds the wait as over REST; gRPC's own HTTP/2 flow control and
keep-alive replace the HTTP connection guard.

Compression: requests compressed with gzip or deflate (``grpc-encoding``; tritonclient's
``compression_algorithm``, grpcio's ``compression=``) are inflated by gRPC itself, within
``limits.max_body_bytes`` as inflated. Inference answers are compressed with ``grpc_compression``
(gzip or deflate) once they reach ``MIN_COMPRESS_BYTES``, as REST's are (smaller ones cost more to
compress than they save); the other methods' answers are small and go plain. The default, "none",
compresses nothing, because gRPC gives the server no say per client: a request's ``grpc-encoding``
and ``grpc-accept-encoding`` never reach the servicer, and gRPC does not fall back for a client that
cannot inflate the algorithm (that call fails INTERNAL). grpcio and tritonclient inflate both; a
grpc-go client needs the gzip codec registered. So a deployment turns it on when its clients can
read it, as with Triton's ``--grpc-infer-response-compression-level``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

import grpc

from serving_harness import __version__
from serving_harness.errors import InferenceFailed, ModelNotReady, ServingError
from serving_harness.metrics import UNKNOWN_MODEL
from serving_harness.protocol.compression import MIN_COMPRESS_BYTES
from serving_harness.protocol.connection import connection_budget
from serving_harness.protocol.grpc_codec import decode_grpc_request, encode_grpc_response
from serving_harness.protocol.grpc_gen import grpc_predict_v2_pb2 as pb
from serving_harness.protocol.grpc_gen import grpc_predict_v2_pb2_grpc as pb_grpc
from serving_harness.protocol.grpc_gen import health_pb2, health_pb2_grpc
from serving_harness.protocol.rest import EXTENSIONS, SERVER_NAME, Harness, public_message
from serving_harness.sched import yield_on_wake

if TYPE_CHECKING:
    from serving_harness.model import ServedModel

__all__ = ["GRPC_CODES", "SERVICE_NAME", "GrpcListener", "start_grpc_server"]

logger = logging.getLogger(__name__)
SERVICE_NAME = "inference.GRPCInferenceService"
HEALTH_POLL_S = 0.5  # how often Watch looks at readiness
# HTTP status of a ServingError -> the gRPC code it is answered with
GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# ServingConfig.grpc_compression -> what gRPC compresses an answer of MIN_COMPRESS_BYTES or more with (None: never)
COMPRESSION = {
    "none": None,
    "gzip": grpc.Compression.Gzip,
    "deflate": grpc.Compression.Deflate,
}
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class GrpcListener:
    """Where the gRPC server listens. Port 0 picks a free one; ``on_listening(host, port)`` gets the bound
    port. ``reuse_port`` lets several worker processes bind the same port (the kernel spreads the calls)."""

    host: str = "127.0.0.1"
    port: int = 8001
    on_listening: Callable[[str, int], None] | None = None
    reuse_port: bool = False

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


async def start_grpc_server(harness: Harness, listener: GrpcListener) -> grpc.aio.Server:
    """Start the inference and health services on ``listener`` (on the running loop); return the server.

    Raises OSError when the address cannot be bound.
    """
    limits = harness.settings.limits
    options = [
        ("grpc.max_receive_message_length", limits.max_body_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", int(listener.reuse_port)),  # off: a port in use is an error, not shared
        # The REST guard's bounds, for gRPC: connections share the process's budget with REST's (idle sockets
        # on this port must not take the descriptors REST needs), and a connection that has not finished its
        # HTTP/2 handshake within the header timeout is closed, as REST closes one that sends no headers.
        ("grpc.max_allowed_incoming_connections", connection_budget(limits.max_connections, listeners=2)),
        ("grpc.server_handshake_timeout_ms", int(limits.header_timeout_s * 1000)),
    ]
    with yield_on_wake():  # grpc's poller and I/O threads start here (once per process): see sched
        server = grpc.aio.server(options=options)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(_InferenceService(harness), server)  # type: ignore[no-untyped-call]
    health_pb2_grpc.add_HealthServicer_to_server(_HealthService(harness), server)  # type: ignore[no-untyped-call]
    try:
        port = server.add_insecure_port(listener.address)
    except RuntimeError as exc:  # grpc's way of saying the bind failed
        raise OSError(f"cannot listen for gRPC on {listener.address}: {exc}") from exc
    await server.start()
    logger.info("grpc listening", extra={"host": listener.host, "port": port})
    if listener.on_listening is not None:
        listener.on_listening(listener.host, port)
    return server


class _InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The OIP v2 methods, over the REST app's ``Harness``."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.guarded = harness.token is not None or harness.limiter is not None
        self.compression = COMPRESSION[harness.settings.grpc_compression]

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.harness.is_ready())

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        await self._guard(context, lambda: None)
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=list(EXTENSIONS))

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        model = await self._guard(context, lambda: self.harness.model_for(_path_params(request.name, request.version)))
        return pb.ModelReadyResponse(ready=model.serving)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        model = await self._guard(context, lambda: self.harness.model_for(_path_params(request.name, request.version)))
        doc = self.harness.describe(model)
        return pb.ModelMetadataResponse(
            name=doc["name"],
            versions=doc["versions"],
            platform=doc["platform"],
            inputs=[_tensor_metadata(t) for t in doc["inputs"]],
            outputs=[_tensor_metadata(t) for t in doc["outputs"]],
        )

    async def _guard(self, context: Any, lookup: Callable[[], Any]) -> Any:
        """The token check (a model's name is not for strangers), then ``lookup``; errors abort the call."""
        try:
            self.harness.authorize(_metadata_text(context, "authorization"))
            return lookup()
        except ServingError as exc:
            await _abort(context, exc)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        started_s = perf_counter()
        params = _path_params(request.model_name, request.model_version)
        headers = _metadata(context) if self.harness.canary is not None else {}
        model = self.harness.pick(params, headers)
        metrics = model.metrics if model is not None else self.harness.metrics.for_model(UNKNOWN_MODEL)
        metrics.request_started()
        status = 200
        try:
            return await self._infer(request, params, context, model)
        except ServingError as exc:
            status = exc.status_code
            await _abort(context, exc)
        except Exception as exc:  # a bug: answer INTERNAL and keep the trace in the log
            logger.exception("unexpected error while serving a gRPC request")
            status = 500
            await _abort(context, InferenceFailed(f"internal error: {type(exc).__name__}"))
        finally:
            metrics.request_done(status, perf_counter() - started_s, "grpc")
        raise AssertionError("unreachable: abort raises")

    async def _infer(
        self, request: pb.ModelInferRequest, params: dict[str, str], context: Any, picked: ServedModel | None
    ) -> pb.ModelInferResponse:
        if self.guarded:
            self._admit(context)
        model = picked or self.harness.model_for(params)  # the lookup raises NOT_FOUND
        schema = model.active_schema
        if schema is None:
            raise ModelNotReady(f"model {model.config.name!r} is not ready: {model.reason or 'loading'}")
        decoded = decode_grpc_request(request, schema)
        answer = await model.answer(decoded)
        response = encode_grpc_response(
            model_name=model.config.name,
            model_version=model.config.version,
            request=decoded,
            outputs=answer.outputs,
            schema=schema,
        )
        if self.compression is not None and response.ByteSize() >= MIN_COMPRESS_BYTES:
            await _compress(context, self.compression)
        return response

    def _admit(self, context: Any) -> None:
        """As REST (``Harness.admit``): the token (UNAUTHENTICATED), then the rate limit (RESOURCE_EXHAUSTED)."""
        self.harness.admit(_metadata_text(context, "authorization"), _peer_host(context.peer()))


class _HealthService(health_pb2_grpc.HealthServicer):
    """``grpc.health.v1``: SERVING when every model serves; "" and the inference service are known."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness

    def _status(self) -> health_pb2.HealthCheckResponse.ServingStatus:
        return _SERVING if self.harness.is_ready() else _NOT_SERVING

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
        if request.service not in ("", SERVICE_NAME):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=self._status())

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        if request.service not in ("", SERVICE_NAME):
            yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
            return
        last = None
        while True:  # until the client cancels or the server stops (either cancels this task)
            status = self._status()
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(HEALTH_POLL_S)


async def _abort(context: Any, exc: ServingError) -> None:
    """End the call with the gRPC code of ``exc``'s HTTP status (raises)."""
    if exc.status_code == 500:  # the others are the client's or the load's doing: counted, not logged
        logger.warning("request failed", extra={"status": exc.status_code, "error": exc.message})
    trailing = tuple((k.lower(), v) for k, v in exc.headers().items() if k.lower() == "retry-after")
    code = GRPC_CODES.get(exc.status_code, grpc.StatusCode.UNKNOWN)
    await context.abort(code, public_message(exc.message), trailing_metadata=trailing)


async def _compress(context: Any, algorithm: grpc.Compression) -> None:
    """Have this call's answer compressed. The choice travels in the initial metadata and holds only when that
    goes out ahead of the answer (set alone, gRPC sends the answer plain), hence the explicit send."""
    context.set_compression(algorithm)
    await context.send_initial_metadata(())


def _path_params(name: str, version: str) -> dict[str, str]:
    """What a REST route's path would hold: the model, and the version when one is asked for."""
    return {"model": name, "version": version} if version else {"model": name}


def _metadata(context: Any) -> dict[bytes, bytes]:
    """The call's metadata as the REST app sees headers: lower-case raw names and values."""
    found: dict[bytes, bytes] = {}
    for key, value in context.invocation_metadata() or ():
        found[key.lower().encode()] = value if isinstance(value, bytes) else value.encode("latin-1")
    return found


def _metadata_text(context: Any, name: str) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == name and isinstance(value, str):
            return value
    return ""


def _peer_host(peer: str) -> str:
    """``ipv4:127.0.0.1:5000`` -> ``127.0.0.1``; ``ipv6:[::1]:5000`` -> ``::1`` (one bucket per host, not port)."""
    _, _, address = peer.partition(":")
    if address.startswith("["):
        return address[1:].partition("]")[0]
    return address.rpartition(":")[0] or address


def _tensor_metadata(tensor: dict[str, Any]) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=tensor["name"], datatype=tensor["datatype"], shape=list(tensor["shape"])
    )
