"""HTTP/1.1 connections that a hostile client cannot hold hostage (uvicorn's httptools protocol, guarded).

uvicorn times out only idle keep-alive connections after a response: a socket that never sends a byte,
sends half its headers, or stops half-way through its body is held for ever, and enough of them use up
the process's file descriptors so that nobody else gets in. ``GuardedHttpProtocol`` adds three rules:

- **Header deadline.** A connection has ``header_timeout_s`` from being opened (or from its last
  response) to deliver complete request headers; otherwise it is closed. Trickling bytes does not reset
  the clock, and the rest of a body the app did not read counts as "before the next headers".
- **Body deadline (backstop).** Once the headers are in, the body has ``body_timeout_s`` (plus a second
  of grace) to arrive in full; the infer route answers 408 itself at ``body_timeout_s``
  (``protocol.rest``), this closes whatever else a route left waiting.
- **Connection cap.** Above ``max_connections`` open connections, the connection idle the longest
  (no request in progress: a stalled header, a parked keep-alive) is closed to make room; if every
  other connection is busy, the new one is closed at once.

Closing is the answer (no 408 is written): the peer sent no request to answer. Each close is counted
by reason (``header_timeout``, ``body_timeout``, ``limit``) in the dict the app's lifespan state holds
under ``CLOSED_CONNECTIONS`` (``sh_connections_closed_total`` in ``/metrics``).

One write per small response: uvicorn writes a response's status line and headers, then its body, in
two ``transport.write`` calls, hence two ``send`` system calls and two TCP segments that the client reads
apart. A response with a Content-Length (not chunked, not to HEAD) now goes out in one: the cycle writes
through ``_OneWrite``, which holds the head until the first body bytes and writes both together (a close
or a disconnect in between sends the head alone, as before, or drops it with the connection). Safe
because uvicorn's cycle writes its head exactly once, in ``http.response.start``, and a Content-Length
promises a body message that follows (Starlette sends it at once); a chunked (streaming) response keeps
its head unheld, so a client sees it before the first chunk.

uvicorn (0.54, which bundles pin) has no header or body read timeout, and ``limit_concurrency`` answers
503 to everyone once idle sockets fill it: hence a subclass of its httptools protocol, which overrides
only the parser callbacks and connection events that uvicorn's own protocols implement.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import asdict, dataclass
from time import monotonic
from typing import Any, cast

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

__all__ = ["BODY_GRACE_S", "CLOSED_CONNECTIONS", "ConnectionLimits", "GuardedHttpProtocol"]

logger = logging.getLogger(__name__)
BODY_GRACE_S = 1.0  # the infer route's own 408 at body_timeout_s comes first
CLOSED_CONNECTIONS = "sh_closed_connections"  # lifespan state key: reason -> connections closed
WARNING_INTERVAL_S = 60.0  # a flood of connections logs one warning a minute, not one per connection

RESERVED_FILES = 64  # descriptors kept for the model files, logs and the runtime's own use


def connection_budget(max_connections: int, *, listeners: int = 1) -> int:
    """The connections one listener may hold: ``max_connections``, and all ``listeners`` of this process (REST,
    gRPC) together under its open-file limit, less ``RESERVED_FILES``: idle sockets on one protocol must not
    use up the descriptors the other needs to accept anything."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return min(max_connections, max(1, (soft - RESERVED_FILES) // listeners))


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection deadlines and the cap on open connections (picklable: workers get it by spawn)."""

    header_timeout_s: float
    body_timeout_s: float
    max_connections: int


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a body deadline and a connection cap.

    uvicorn builds one per connection; pass it as ``http=functools.partial(GuardedHttpProtocol,
    limits=...)`` (see ``serving_harness.server``).
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.idle_since_s = monotonic()
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_body = False
        self._closed: dict[str, int] = app_state.get(CLOSED_CONNECTIONS, {})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_headers()
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.transport is self.transport:  # a new cycle (not an upgrade)
            self.cycle.transport = cast(asyncio.Transport, _OneWrite(self.transport, self.cycle))
        self._reading_body = True
        self._set_deadline(self.limits.body_timeout_s + BODY_GRACE_S)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._reading_body:  # not when it is the tail of a body the app never read
            self._reading_body = False
            self._cancel_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing() or self.pipeline or not self.cycle.response_complete:
            return  # closing, or a pipelined request runs now
        self._expect_headers()

    def send_400_response(self, msg: str) -> None:
        """Bad HTTP framing (a lying Content-Length, bytes that are no request) answers OIP error JSON like
        every other refusal, not uvicorn's plain text, and closes the connection (its framing is lost)."""
        body = orjson.dumps({"error": f"bad HTTP request: {msg.rstrip('.').lower()}"})
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    @property
    def idle(self) -> bool:
        """No request is being served: waiting for (the rest of) the next request's headers."""
        return (self.cycle is None or self.cycle.response_complete) and not self.pipeline

    def _expect_headers(self) -> None:
        self.idle_since_s = monotonic()
        self._reading_body = False
        self._set_deadline(self.limits.header_timeout_s)

    def _set_deadline(self, delay_s: float) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_later(delay_s, self._expired)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self._close("body_timeout" if self._reading_body else "header_timeout")

    def _make_room(self) -> None:
        """Close the connection idle the longest (this one if every other is busy)."""
        idle = [c for c in self.connections if isinstance(c, GuardedHttpProtocol) and c is not self and c.idle]
        victim = min(idle, key=lambda c: c.idle_since_s) if idle else self
        victim._close("limit")

    def _close(self, reason: str) -> None:
        self._closed[reason] = self._closed.get(reason, 0) + 1
        _warn_now_and_then(self.limits, reason)
        self.transport.close()


class _OneWrite:
    """The transport one response cycle writes through: a Content-Length response's head waits for its
    first body bytes and goes out with them in one write. The cycle calls only write, close and is_closing."""

    __slots__ = ("_cycle", "_head", "_head_seen", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._head_seen = False

    def write(self, data: bytes) -> None:
        """Write ``data``, holding the response head when a body is sure to follow."""
        if self._head is not None:
            data, self._head = self._head + data, None
        elif not self._head_seen and self._cycle.response_started:  # the head: uvicorn writes it once
            self._head_seen = True
            if self._body_follows():
                self._head = bytes(data)
                return
        self._transport.write(data)

    def _body_follows(self) -> bool:
        cycle = self._cycle
        return cycle.chunked_encoding is False and cycle.expected_content_length > 0 and cycle.scope["method"] != "HEAD"

    def close(self) -> None:
        """Send a held head first (an app that failed after starting its response), then close."""
        if self._head is not None and not self._transport.is_closing():
            self._transport.write(self._head)
        self._head = None
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


_last_warning_s = -WARNING_INTERVAL_S


def _warn_now_and_then(limits: ConnectionLimits, reason: str) -> None:
    global _last_warning_s  # one process-wide clock: the point is fewer lines, not exact accounting
    now_s = monotonic()
    if now_s - _last_warning_s >= WARNING_INTERVAL_S:
        _last_warning_s = now_s
        logger.warning(
            "closing connections that hold the server (counted in sh_connections_closed_total)",
            extra={"reason": reason, **asdict(limits)},
        )
