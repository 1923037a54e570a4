"""Run the app under uvicorn with the fast stack: uvloop, httptools, no access log.

``serve`` binds the socket itself (port 0 picks a free port), logs one ``listening`` line with the
bound port, and on SIGTERM or SIGINT stops accepting, lets in-flight requests finish (up to
``limits.request_timeout_s``), closes the models and returns, so the process exits 0.

Connections are guarded against hostile clients (``protocol.connection``): request headers must arrive
within ``limits.header_timeout_s`` and a body within ``limits.body_timeout_s``, and at most
``limits.max_connections`` are open at once, never more than the open-file limit leaves room for.

With ``workers > 1`` uvicorn starts that many processes on the same socket; each loads its own
model instances and keeps its own metrics (scrape each or put them behind one Service).

``grpc_port``: the app's lifespan also serves gRPC there (``protocol.grpc_service``), on uvicorn's
event loop, so both protocols share the models and batchers; with ``workers > 1`` every worker binds
that port with SO_REUSEPORT and the kernel spreads the connections.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from serving_harness.config import ServingConfig
from serving_harness.errors import BadInput
from serving_harness.log import configure_logging
from serving_harness.model import ModelConfig
from serving_harness.protocol.connection import ConnectionLimits, GuardedHttpProtocol, connection_budget
from serving_harness.protocol.grpc_service import GrpcListener
from serving_harness.protocol.rest import create_app

__all__ = ["app_from_environment", "bind_socket", "connection_limits", "pick_port", "serve", "uvicorn_config"]

logger = logging.getLogger(__name__)
SPEC_VARIABLE = "SERVING_HARNESS_SPEC"  # how `workers > 1` hands the models and settings to each worker
OnListening = Callable[[str, int], None]


def serve(
    models: Sequence[ModelConfig],
    settings: ServingConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "info",
    on_listening: OnListening | None = None,
    grpc_port: int | None = None,
) -> None:
    """Serve ``models`` until SIGTERM/SIGINT, then drain and return; ``grpc_port``: gRPC too (not 0)."""
    configure_logging(log_level)
    if workers > 1:
        _serve_workers(
            models, settings, host=host, port=port, workers=workers, log_level=log_level,
            on_listening=on_listening, grpc_port=grpc_port,
        )  # fmt: skip
        return
    sock = bind_socket(host, port)
    _announce(host, sock.getsockname()[1], on_listening)
    grpc = None if grpc_port is None else GrpcListener(host=host, port=grpc_port)
    app = create_app(models, settings, grpc=grpc)
    config = uvicorn_config(app, settings, grpc=grpc is not None, log_level=log_level)
    with _exit_quietly_after_signals():
        uvicorn.Server(config).run(sockets=[sock])
    logger.info("server stopped")


def uvicorn_config(app: Starlette, settings: ServingConfig, *, grpc: bool = False, **overrides: Any) -> uvicorn.Config:
    """uvicorn settings for serving: uvloop, httptools, no access log, our logging, bounded drain; ``grpc``: the
    process serves gRPC too, and the two share its connection budget."""
    return uvicorn.Config(app, **_uvicorn_options(settings, grpc=grpc, **overrides))


def _uvicorn_options(settings: ServingConfig, *, grpc: bool, **overrides: Any) -> dict[str, Any]:
    limits = connection_limits(settings, listeners=2 if grpc else 1)
    return {
        "loop": "uvloop",
        "http": functools.partial(GuardedHttpProtocol, limits=limits),
        "access_log": False,
        "log_config": None,
        "server_header": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": settings.limits.request_timeout_s + 5,
        **overrides,
    }


def connection_limits(settings: ServingConfig, *, listeners: int = 1) -> ConnectionLimits:
    """The connection guard's settings; the cap stays under this process's open-file limit, shared with the
    other ``listeners`` (gRPC) of the process."""
    limits = settings.limits
    return ConnectionLimits(
        header_timeout_s=limits.header_timeout_s,
        body_timeout_s=limits.body_timeout_s,
        max_connections=connection_budget(limits.max_connections, listeners=listeners),
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 picks a free port (read it with ``getsockname()``).

    BadInput (exit 2 from the command line) when the address cannot be bound: in use, not this host's.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        raise BadInput(f"cannot listen on {host}:{port}: {exc}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def pick_port(host: str, port: int) -> int:
    """``port``, or a free one for 0 (bound and released: the gRPC server binds it later, on the loop)."""
    if port:
        return port
    with contextlib.closing(bind_socket(host, 0)) as probe:
        return int(probe.getsockname()[1])


def app_from_environment() -> Starlette:
    """The app of one worker process (``workers > 1``), from the spec the parent put in the environment."""
    spec = json.loads(os.environ[SPEC_VARIABLE])
    configure_logging(spec["log_level"])
    models = [ModelConfig(name=m["name"], path=Path(m["path"]), version=m["version"]) for m in spec["models"]]
    grpc_port = spec.get("grpc_port")
    grpc = None if grpc_port is None else GrpcListener(host=spec["host"], port=grpc_port, reuse_port=True)
    return create_app(models, ServingConfig(**spec["settings"]), grpc=grpc)


def _serve_workers(
    models: Sequence[ModelConfig],
    settings: ServingConfig,
    *,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    on_listening: OnListening | None,
    grpc_port: int | None = None,
) -> None:
    if port == 0:
        with contextlib.closing(bind_socket(host, 0)) as probe:
            port = probe.getsockname()[1]
    spec = {
        "models": [{"name": m.name, "path": str(m.path), "version": m.version} for m in models],
        "settings": settings.model_dump(mode="json"),
        "log_level": log_level,
        "host": host,
        "grpc_port": grpc_port,
    }
    os.environ[SPEC_VARIABLE] = json.dumps(spec)
    _announce(host, port, on_listening)
    options = _uvicorn_options(
        settings, grpc=grpc_port is not None, host=host, port=port, workers=workers, factory=True, log_level=log_level
    )
    uvicorn.run(f"{__name__}:app_from_environment", **options)


def _announce(host: str, port: int, on_listening: OnListening | None) -> None:
    logger.info("listening", extra={"host": host, "port": port, "url": f"http://{host}:{port}"})
    if on_listening is not None:
        on_listening(host, port)


@contextlib.contextmanager
def _exit_quietly_after_signals() -> Iterator[None]:
    """uvicorn re-raises SIGTERM/SIGINT once it has drained; absorb that so the process exits 0."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, _note_signal) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _note_signal(signum: int, frame: FrameType | None) -> None:
    logger.info("signal after drain ignored", extra={"signal": signal.Signals(signum).name})
