"""The Starlette app: Open Inference Protocol v2 routes over HTTP/REST, and ``/metrics``.

Routes (``{v}``: the model's version; every ``/v2/models/{m}/...`` route also exists under
``/v2/models/{m}/versions/{v}/...``)::

    GET  /v2                          server metadata            bearer token when auth is on
    GET  /v2/health/live              {"live": true}             open
    GET  /v2/health/ready             {"ready": bool}, 200/503   open (the probes' route)
    GET  /v2/models/{m}               model metadata             bearer token when auth is on
    GET  /v2/models/{m}/ready         {"name", "ready"}, 200/503 bearer token when auth is on
    POST /v2/models/{m}/infer         inference                  bearer token when auth is on
    GET  /v2/models/{m}/config        Triton's model config      bearer token when auth is on
    GET  /v2/models/{m}/stats         Triton's statistics        bearer token when auth is on (also /v2/models/stats)
    POST /v2/repository/index         the served versions        bearer token when auth is on
    GET  /metrics                     Prometheus text            the token when auth is on (metrics_auth)
    anything else                     404 or 405 + Allow, OIP    counted in sh_unmatched_requests_total

The extensions' documents are in ``extensions``. The infer route reads ``Content-Encoding: gzip|deflate``
bodies and compresses its answer when ``Accept-Encoding`` asks (``compression``). With ``grpc`` the
same models, limits and metrics also serve gRPC (``grpc_service``), started and stopped by the lifespan.

Every error is an OIP JSON body ``{"error": "..."}``, unknown routes and wrong methods included.

Choices: not ready is 503 (Kubernetes probes and OIP clients only test for 200); a request with no
result within ``limits.request_timeout_s`` is 504 (503 stays "try again later": queue full, not
ready); the timeout covers the wait for a batch and the run, not the body upload, which has
``limits.body_timeout_s`` of its own: past it the answer is 408 and the connection closes (a slow
sender cannot hold a request open; ``protocol.connection`` closes stalled headers and caps
connections). A model that fails to load leaves the server live but not ready; its metadata says
``"state": "UNAVAILABLE"`` and why.

Hostile callers: with auth on, a caller without the token learns no model name: every route that
names a model answers 401 before it looks the name up (so an unknown name is 401, not a 404 listing
the served ones), and ``/v2`` lists none. ``/metrics`` carries model names as labels, so with auth on it needs
the token too; ``metrics_auth: false`` opens it for Prometheus' annotation-based scraping (the
bundle's Deployment does, and says to keep the pod network private). No answer carries an
absolute path (a runtime's load error names the model's file: the client sees the file name only; the
log has it whole). The rate limit is per verified identity: the token when auth is on (however its
header is spelt), the peer address when it is off; never a header the client makes up.

Bundles add: a model's fallback (see ``fallback``; the model counts as ready once loaded, or once it
failed to load and its fallback is ready), drift monitoring of answered requests, and a canary
(``canary``): two versions of one name, a request without a version in its path goes to one of them
by the split, and ``/v2/canary`` reads (token when auth is on) or sets the weight.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
from collections.abc import AsyncIterator, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from serving_harness import __version__
from serving_harness.canary import CanarySplit, canary_routes
from serving_harness.config import ServingConfig
from serving_harness.errors import (
    InferenceFailed,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    RateLimited,
    RequestBodyTimeout,
    RouteNotFound,
    ServingError,
    Unauthorized,
)
from serving_harness.metrics import CONTENT_TYPE, UNKNOWN_MODEL, Metrics
from serving_harness.model import ModelConfig, ServedModel
from serving_harness.protocol import extensions
from serving_harness.protocol.codec import (
    HEADER_LENGTH,
    decode_infer_request,
    encode_infer_response,
)
from serving_harness.protocol.compression import MIN_COMPRESS_BYTES, compress, decompress, response_encoding
from serving_harness.protocol.connection import CLOSED_CONNECTIONS
from serving_harness.rate_limit import RateLimiter

if TYPE_CHECKING:
    from serving_harness.protocol.grpc_service import GrpcListener

__all__ = ["EXTENSIONS", "SERVER_NAME", "Harness", "create_app", "public_message"]

logger = logging.getLogger(__name__)
SERVER_NAME = "serving_harness"
# What is served in full (the repository index is served, but not load/unload: no "model_repository").
EXTENSIONS = ("binary_tensor_data", "parameters", "model_configuration", "statistics")
JSON = "application/json"
_JSON_TYPE = (b"content-type", b"application/json")
_HEADER_LENGTH = HEADER_LENGTH.lower().encode()
# The directories of an absolute path (``/srv/models/``), so "/srv/models/m.onnx" reads "m.onnx" to a client.
_ABSOLUTE_DIRECTORIES = re.compile(r"(?<![\w.~-])/(?:[^\s/'\"`:,;()\[\]]+/)+")


def create_app(
    models: Sequence[ModelConfig],
    settings: ServingConfig,
    *,
    canary: CanarySplit | None = None,
    version_label: bool = False,
    grpc: GrpcListener | None = None,
) -> Starlette:
    """An OIP v2 app serving ``models``; they load in the background once the app starts.

    Two configs may share a name only as the two versions of ``canary``. ``version_label`` adds a
    ``version`` label to every metric (always on with a canary). ``grpc``: also serve gRPC there, from
    the app's lifespan (on uvicorn's event loop).

    Example::

        app = create_app([ModelConfig(name="digits", path=Path("model.onnx"))], ServingConfig())
    """
    _check_names(models, canary)
    harness = Harness(models, settings, canary=canary, version_label=version_label)
    harness.grpc = grpc
    handlers = {HTTPException: harness.unmatched}
    return _OipApp(
        _InferEndpoint(harness), routes=harness.routes(), lifespan=harness.lifespan, exception_handlers=handlers
    )


class _OipApp(Starlette):
    """Starlette, with ``POST /v2/models/{m}[/versions/{v}]/infer`` sent straight to its endpoint: the hot
    route skips the middleware stack and the route table (about a tenth of the event loop's work for a small
    request, per benchmarks/rest_overhead.py; the endpoint answers each of its errors in OIP form itself).
    Everything else goes Starlette's way."""

    def __init__(self, infer: _InferEndpoint, **options: Any) -> None:
        super().__init__(**options)
        self.infer = infer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            params = _infer_path_params(scope["path"])
            if params is not None:
                scope["app"] = self
                scope["path_params"] = params
                await self.infer(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


_MODELS_PREFIX, _INFER_SUFFIX = "/v2/models/", "/infer"


def _infer_path_params(path: str) -> dict[str, str] | None:
    """The path parameters the infer routes would match in ``path`` (as Starlette's ``{m}``: one non-empty
    segment), or None for any other path."""
    if not (path.startswith(_MODELS_PREFIX) and path.endswith(_INFER_SUFFIX)):
        return None
    segments = path[len(_MODELS_PREFIX) : -len(_INFER_SUFFIX)].split("/")
    if len(segments) == 1 and segments[0]:
        return {"model": segments[0]}
    if len(segments) == 3 and segments[1] == "versions" and segments[0] and segments[2]:
        return {"model": segments[0], "version": segments[2]}
    return None


def _check_names(models: Sequence[ModelConfig], canary: CanarySplit | None) -> None:
    keys = [(m.name, m.version) for m in models]
    names = [m.name for m in models]
    if len(set(keys)) != len(keys):
        raise ValueError(f"model names must be unique, got {names}")
    shared = {name for name in names if names.count(name) > 1}
    allowed = {canary.model} if canary is not None else set()
    if shared - allowed:
        raise ValueError(f"model names must be unique, got {names}")
    if canary is not None:
        missing = {canary.stable, canary.candidate} - {v for n, v in keys if n == canary.model}
        if missing:
            raise ValueError(f"the canary of {canary.model!r} names version(s) {sorted(missing)} that are not served")


class Harness:
    """The server's state and its route handlers: the models, auth, the rate limiter and the metrics that
    REST and gRPC (``grpc_service``) share. ``model_for``, ``authorize``, ``rate_limit``, ``admit`` and
    ``describe`` are what a protocol asks of it."""

    def __init__(
        self,
        models: Sequence[ModelConfig],
        settings: ServingConfig,
        *,
        canary: CanarySplit | None = None,
        version_label: bool = False,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics(version_label=version_label or canary is not None)
        self.canary = canary
        self.versions = {(m.name, m.version): self._served(m) for m in models}  # every served version
        self.models: dict[str, ServedModel] = {}  # name -> the version a request without one gets by default
        for (name, _), model in self.versions.items():
            self.models.setdefault(name, model)
        if canary is not None:
            self.models[canary.model] = self.versions[(canary.model, canary.stable)]
            self.metrics.registry.register(canary.collector())
        self.limiter = RateLimiter(settings.rate_limit_rps) if settings.rate_limit_rps else None
        self.token = settings.auth_token.encode() if settings.auth_token else None
        self.grpc: GrpcListener | None = None

    def _served(self, config: ModelConfig) -> ServedModel:
        model = ServedModel(config, self.settings, self.metrics.for_model(config.name, config.version))
        if config.fallback is not None:
            model.fallback = self._served(config.fallback)
        return model

    def pick(self, params: dict[str, Any], headers: dict[bytes, bytes]) -> ServedModel | None:
        """The version a request goes to: the one in its path, the canary's choice, or the only one."""
        name = params["model"]
        version = params.get("version")
        if version is not None:
            return self.versions.get((name, version))
        if self.canary is not None and name == self.canary.model:
            return self.versions[(name, self.canary.choose(headers))]
        return self.models.get(name)

    def routes(self) -> list[Route]:
        routes = [
            Route("/v2/models/{model}/infer", _InferEndpoint(self), methods=["POST"]),  # first: the hot path
            Route("/v2", self.server_metadata),
            Route("/v2/health/live", self.live),
            Route("/v2/health/ready", self.ready),
            Route("/metrics", self.prometheus),
            Route("/v2/models/stats", self.statistics),  # before /v2/models/{model}
            Route("/v2/repository/index", self.repository_index, methods=["POST"]),
        ]
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
            routes += [Route(prefix, self.model_metadata), Route(prefix + "/ready", self.model_ready)]
            routes += [Route(prefix + "/config", self.model_config), Route(prefix + "/stats", self.statistics)]
        routes.append(Route("/v2/models/{model}/versions/{version}/infer", _InferEndpoint(self), methods=["POST"]))
        if self.canary is not None:
            routes += canary_routes(self.canary, self.authorize, has_token=self.token is not None)
        return routes

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[dict[str, Any]]:
        loading = asyncio.create_task(self._load_all())
        grpc_server = await self._start_grpc()
        try:
            # uvicorn hands this state to each connection too: the connection guard counts its closes here.
            yield {CLOSED_CONNECTIONS: self.metrics.closed_connections}
        finally:
            # uvicorn has already waited for in-flight requests; gRPC's get as long; then the batchers finish.
            loading.cancel()
            timeout_s = self.settings.limits.request_timeout_s
            if grpc_server is not None:
                await grpc_server.stop(timeout_s)
            await asyncio.gather(*(m.close(timeout_s) for m in self.versions.values()))
            logger.info("models closed")

    async def _start_grpc(self) -> Any:
        if self.grpc is None:
            return None
        from serving_harness.protocol.grpc_service import start_grpc_server  # grpc loads only when asked for

        return await start_grpc_server(self, self.grpc)

    async def _load_all(self) -> None:
        loop = asyncio.get_running_loop()
        for model in self.versions.values():
            await loop.run_in_executor(None, model.load)
        logger.info("server ready" if self.is_ready() else "server live, not ready")

    def is_ready(self) -> bool:
        return all(m.serving for m in self.versions.values())

    # ------------------------------------------------------------------------------------ health

    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self.is_ready()
        return _json({"ready": ready}, 200 if ready else 503)

    async def model_ready(self, request: Request) -> Response:
        try:
            self.authorize(request.headers.get("authorization", ""))  # a model's name is not for strangers
            model = self.model_for(request.path_params)
        except ServingError as exc:
            return _error(exc)
        ready = model.serving
        return _json({"name": model.config.name, "ready": ready}, 200 if ready else 503)

    async def prometheus(self, request: Request) -> Response:
        if self.settings.metrics_need_token:
            try:
                self.authorize(request.headers.get("authorization", ""))
            except ServingError as exc:
                return _error(exc)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def unmatched(self, request: Request, exc: Exception) -> Response:
        """No route (404) or a method the route does not take (405): an OIP error, counted."""
        assert isinstance(exc, HTTPException)  # the one exception this handler is registered for
        if exc.status_code not in (404, 405):  # not the router's: Starlette's message, in OIP form
            return _json({"error": exc.detail}, exc.status_code)
        self.metrics.unmatched_request(exc.status_code)
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "")
            refused: ServingError = MethodNotAllowed(f"{where} is not allowed; this route takes {allow}", allow=allow)
        else:
            refused = RouteNotFound(f"no route for {where}; the OIP v2 routes are under /v2")
        return _error(refused, redact=False)  # the only path in it is the caller's own

    # ---------------------------------------------------------------------------------- metadata

    async def server_metadata(self, request: Request) -> Response:
        try:
            self.authorize(request.headers.get("authorization", ""))
        except ServingError as exc:
            return _error(exc)
        return _json({"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)})

    async def model_metadata(self, request: Request) -> Response:
        try:
            self.authorize(request.headers.get("authorization", ""))
            model = self.model_for(request.path_params)
        except ServingError as exc:
            return _error(exc)
        return _json(self.describe(model))

    # -------------------------------------------------------------------------------- extensions

    async def model_config(self, request: Request) -> Response:
        try:
            self.authorize(request.headers.get("authorization", ""))
            model = self.model_for(request.path_params)
        except ServingError as exc:
            return _error(exc)
        return _json(extensions.model_configuration(model))

    async def statistics(self, request: Request) -> Response:
        """Every served version's statistics, or those of the model (and version) in the path."""
        params = request.path_params
        try:
            self.authorize(request.headers.get("authorization", ""))
            if "model" in params:
                self.model_for(params)  # 404 for an unknown name or version
        except ServingError as exc:
            return _error(exc)
        wanted = [
            model
            for (name, version), model in self.versions.items()
            if params.get("model", name) == name and params.get("version", version) == version
        ]
        return _json(extensions.model_statistics(wanted))

    async def repository_index(self, request: Request) -> Response:
        try:
            self.authorize(request.headers.get("authorization", ""))
            body = await request.body()
            ready_only = bool(body.strip()) and orjson.loads(body).get("ready") is True
        except ServingError as exc:
            return _error(exc)
        except (orjson.JSONDecodeError, AttributeError):
            return _error(InvalidRequest('the body must be a JSON object such as {"ready": true}'))
        index = extensions.repository_index(self.versions.values(), ready_only=ready_only)
        for entry in index:
            entry["reason"] = public_message(entry["reason"])
        return Response(orjson.dumps(index), media_type=JSON)

    # ---------------------------------------------------------------------------------- admission

    def model_for(self, params: dict[str, Any]) -> ServedModel:
        """The served model a route's path parameters name (``model``, and ``version`` when given);
        ModelNotFound (404) for an unknown name or version, naming what is served."""
        name = params["model"]
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(f"unknown model {name!r}; this server has {', '.join(map(repr, self.models))}")
        version = params.get("version")
        if version is not None and (name, version) not in self.versions:
            known = ", ".join(repr(v) for n, v in self.versions if n == name)
            raise ModelNotFound(f"model {name!r} has no version {version!r}; it has {known}")
        return self.versions[(name, version)] if version is not None else model

    def authorize(self, authorization: str) -> None:
        """Check an ``Authorization`` value (``Bearer <token>``) when auth is on; Unauthorized (401) if wrong."""
        if self.token is None:
            return
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token):
            raise Unauthorized("a valid bearer token is required (Authorization: Bearer <token>)")

    def rate_limit(self, identity: str) -> None:
        """Take one request from ``identity``'s bucket when a rate is set; RateLimited (429, Retry-After) if empty."""
        if self.limiter is None:
            return
        wait_s = self.limiter.wait_s(identity)
        if wait_s > 0:
            raise RateLimited(
                f"rate limit of {self.limiter.rate_per_s:g} requests/s exceeded",
                retry_after_s=self.limiter.retry_after_s(wait_s),
            )

    def admit(self, authorization: str, peer_host: str) -> None:
        """An inference call's admission, the same for every protocol: the bearer token first (401), then
        the rate limit of the verified identity (429).

        The identity is the token once it checks out (one configured token, one bucket: spelling it with
        other spaces or case buys no extra rate), or the peer's host when auth is off (never a header the
        client makes up).
        """
        self.authorize(authorization)
        self.rate_limit("bearer" if self.token is not None else f"peer {peer_host}")

    def describe(self, model: ServedModel) -> dict[str, Any]:
        """OIP model metadata, as REST and gRPC answer it: every served version of the model's name, its
        tensors, its ``state`` (and ``reason`` when it failed to load), and for a model with a batch axis
        ``max_request_rows``: the rows one request may carry (413 above)."""
        name = model.config.name
        doc: dict[str, Any] = {"name": name, "versions": [v for n, v in self.versions if n == name]}
        doc.update(_schema_doc(model))
        doc["state"] = model.state.value
        if model.reason is not None:
            doc["reason"] = public_message(model.reason)
        return doc


class _InferEndpoint:
    """POST .../infer as a plain ASGI app: the hot path skips Starlette's Request and Response objects."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.settings = harness.settings
        self.guarded = harness.token is not None or harness.limiter is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started_s = perf_counter()
        request_headers = dict(scope["headers"])
        model = self.harness.pick(scope["path_params"], request_headers)
        metrics = model.metrics if model is not None else self.harness.metrics.for_model(UNKNOWN_MODEL)
        metrics.request_started()
        try:
            status, headers, payload = await self._infer(scope, receive, request_headers, model)
        except ServingError as exc:
            status, headers, payload = _error_parts(exc)
        except Exception as exc:  # a bug: answer in OIP form and keep the trace in the log
            logger.exception("unexpected error while serving a request")
            status, headers, payload = _error_parts(InferenceFailed(f"internal error: {type(exc).__name__}"))
        if len(payload) >= MIN_COMPRESS_BYTES and b"accept-encoding" in request_headers:
            payload = _compressed(payload, request_headers[b"accept-encoding"], headers)
        headers.append((b"content-length", b"%d" % len(payload)))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        metrics.request_done(status, perf_counter() - started_s)

    async def _infer(
        self, scope: Scope, receive: Receive, request_headers: dict[bytes, bytes], picked: ServedModel | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        if self.guarded:
            self._admit(scope, request_headers)
        model = picked or self.harness.model_for(scope["path_params"])  # the lookup raises the 404
        schema = model.active_schema
        if schema is None:
            raise ModelNotReady(f"model {model.config.name!r} is not ready: {model.reason or 'loading'}")
        limits = self.settings.limits
        declared = request_headers.get(b"content-length")
        body = await _receive_body(receive, declared, limits.max_body_bytes, limits.body_timeout_s)
        if b"content-encoding" in request_headers:
            body = decompress(body, request_headers[b"content-encoding"], limits.max_body_bytes)
        header_length = _header_length(request_headers) if _HEADER_LENGTH in request_headers else None
        decoded = decode_infer_request(body, header_length, schema)
        answer = await model.answer(decoded)
        payload, answer_header_length = encode_infer_response(
            model_name=model.config.name,
            model_version=model.config.version,
            request=decoded,
            outputs=answer.outputs,
            schema=schema,
            nonfinite_outputs=answer.nonfinite_outputs,
        )
        timing = b"queue;dur=%.3f, compute;dur=%.3f" % (answer.queue_s * 1e3, answer.compute_s * 1e3)
        if answer_header_length is None:
            return 200, [_JSON_TYPE, (b"server-timing", timing)], payload
        binary = [(b"content-type", b"application/octet-stream"), (_HEADER_LENGTH, b"%d" % answer_header_length)]
        return 200, [*binary, (b"server-timing", timing)], payload

    def _admit(self, scope: Scope, request_headers: dict[bytes, bytes]) -> None:
        client = scope.get("client")
        authorization = request_headers.get(b"authorization", b"").decode("latin-1")
        self.harness.admit(authorization, client[0] if client else "")


def _compressed(payload: bytes, accept_encoding: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """``payload`` in the encoding the client accepts (its header added to ``headers``), or as it is."""
    encoding = response_encoding(accept_encoding)
    if encoding is None:
        return payload
    headers += [(b"content-encoding", encoding), (b"vary", b"accept-encoding")]
    return compress(payload, encoding)


def _schema_doc(model: ServedModel) -> dict[str, Any]:
    """The metadata's platform and tensors (empty until the model or its fallback has loaded), and
    ``max_request_rows`` for a model with a batch axis."""
    schema = model.active_schema
    if schema is None:
        return {"platform": "", "inputs": [], "outputs": []}
    metadata = schema.metadata
    doc: dict[str, Any] = {
        "platform": metadata.platform,
        "inputs": [t.model_dump() for t in metadata.inputs],
        "outputs": [t.model_dump() for t in metadata.outputs],
    }
    if schema.batched:
        doc["max_request_rows"] = model.max_request_rows
    return doc


async def _receive_body(receive: Receive, declared: bytes | None, limit_bytes: int, timeout_s: float) -> bytes:
    """The whole body, within ``limit_bytes`` (413) and ``timeout_s`` (408, and the connection closes)."""
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise PayloadTooLarge(f"the body is {declared.decode()} bytes; the limit is {limit_bytes}")
    deadline = _Deadline(timeout_s)
    try:
        return await _read_chunks(receive, limit_bytes)
    except asyncio.CancelledError:
        if not deadline.expired:
            raise
        deadline.task.uncancel()
        raise RequestBodyTimeout(f"the request body did not arrive within {timeout_s:g} s") from None
    finally:
        deadline.cancel()


async def _read_chunks(receive: Receive, limit_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("the client closed the connection before its body was complete")
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit_bytes:
            raise PayloadTooLarge(f"the body is over the limit of {limit_bytes} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Deadline:
    """Cancels the current task after ``delay_s`` and remembers it did (a plain timer costs a third of
    ``asyncio.timeout``'s, and this runs once per request)."""

    __slots__ = ("_handle", "expired", "task")

    def __init__(self, delay_s: float) -> None:
        task = asyncio.current_task()
        assert task is not None, "a request is always served in a task"
        self.task = task
        self.expired = False
        self._handle = asyncio.get_running_loop().call_later(delay_s, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self.task.cancel()

    def cancel(self) -> None:
        self._handle.cancel()


def _header_length(headers: dict[bytes, bytes]) -> int | None:
    value = headers.get(_HEADER_LENGTH)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest(f"{HEADER_LENGTH} must be an integer, got {value.decode('latin-1')!r}") from None


def _json(doc: dict[str, Any], status_code: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status_code, media_type=JSON)


def _error(exc: ServingError, *, redact: bool = True) -> Response:
    status, _, payload = _error_parts(exc, redact=redact)
    return Response(payload, status_code=status, headers=exc.headers(), media_type=JSON)


def _error_parts(exc: ServingError, *, redact: bool = True) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    if exc.status_code == 500:  # the others are the client's or the load's doing: counted, not logged
        logger.warning("request failed", extra={"status": exc.status_code, "error": exc.message})
    headers = [_JSON_TYPE, *((k.lower().encode(), v.encode()) for k, v in exc.headers().items())]
    return exc.status_code, headers, orjson.dumps({"error": public_message(exc.message) if redact else exc.message})


def public_message(message: str) -> str:
    """What a client is told of an error: ``message`` without the directories of absolute paths (a runtime's error names the model's file):
    where a server keeps its files is not a client's business; the log keeps the whole message."""
    return _ABSOLUTE_DIRECTORIES.sub("", message) if "/" in message else message
