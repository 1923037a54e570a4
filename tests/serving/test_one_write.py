"""A small response goes out in one write (head and body together), and stays well-formed.

The connection protocol itself is driven with a transport that records its writes (what the kernel
would be asked to send), in front of a real Starlette app; then a real server answers keep-alive and
pipelined requests on one raw socket.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import serving_support as support
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from uvicorn.config import Config
from uvicorn.server import ServerState

from serving_harness.config import ServingConfig
from serving_harness.model import ModelConfig
from serving_harness.protocol.connection import ConnectionLimits, GuardedHttpProtocol

LIMITS = ConnectionLimits(header_timeout_s=10.0, body_timeout_s=10.0, max_connections=100)
BODY = b'{"answer": 42}'


class RecordingTransport(asyncio.Transport):
    """Keeps every write; closes when told."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _small(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


async def _stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        yield b"second"

    return StreamingResponse(chunks(), media_type="text/plain")


async def _fails_after_start(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
    raise RuntimeError("the app broke half-way")


APP = Starlette(routes=[Route("/small", _small, methods=["GET", "HEAD"]), Route("/stream", _stream)])


def _exchange(app: Any, request: bytes) -> RecordingTransport:
    """Feed ``request`` to a fresh protocol in front of ``app``; the transport once the response is done."""

    async def scenario() -> RecordingTransport:
        config = Config(app, log_config=None, access_log=False, server_header=False, date_header=False)
        config.load()
        protocol = GuardedHttpProtocol(config, ServerState(), {}, limits=LIMITS)
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(request)
        for _ in range(200):  # bounded: the app answers in a few loop turns
            if transport.closed or (protocol.cycle is not None and protocol.cycle.response_complete):
                break
            await asyncio.sleep(0.005)
        protocol.connection_lost(None)
        return transport

    return asyncio.run(scenario())


def test_a_content_length_response_is_one_write() -> None:
    transport = _exchange(APP, b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")

    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: %d" % len(BODY) in head
    assert body == BODY


def test_a_chunked_response_sends_its_head_before_the_first_chunk() -> None:
    transport = _exchange(APP, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")

    assert transport.writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n")
    assert b"".join(transport.writes[1:]) == b"5\r\nfirst\r\n6\r\nsecond\r\n0\r\n\r\n"


def test_a_head_request_still_gets_its_head() -> None:
    transport = _exchange(APP, b"HEAD /small HTTP/1.1\r\nHost: x\r\n\r\n")

    assert b"".join(transport.writes).startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"".join(transport.writes).endswith(b"\r\n\r\n")


def test_an_app_that_fails_after_starting_sends_the_head_then_closes() -> None:
    transport = _exchange(_fails_after_start, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

    assert b"".join(transport.writes).startswith(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n")
    assert transport.closed


# ------------------------------------------------------------------------------ a real server


@pytest.fixture(scope="module")
def url(models_dir: Path) -> Iterator[str]:
    with support.running_server([ModelConfig("double", models_dir / "double.onnx")], ServingConfig()) as served:
        yield served


def _request(i: int) -> bytes:
    body = json.dumps(support.infer_json(np.full((1, 4), i, dtype=np.float32))).encode()
    head = b"POST /v2/models/double/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def _read_responses(sock: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` (head, body) pairs read off ``sock``, framed by their Content-Length."""
    buffer, answers = b"", list[tuple[bytes, bytes]]()
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            buffer += _recv(sock)
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
        while len(buffer) < length:
            buffer += _recv(sock)
        answers.append((head, buffer[:length]))
        buffer = buffer[length:]
    assert buffer == b""  # nothing beyond the framed responses
    return answers


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    assert chunk, "the server closed the connection"
    return chunk


def _expected(i: int) -> list[float]:
    return [2.0 * i + 1] * 4


def test_keep_alive_and_pipelined_requests_get_well_formed_answers_in_order(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10.0) as sock:
        for i in range(3):  # keep-alive: one after the other on one connection
            sock.sendall(_request(i))
            [(head, body)] = _read_responses(sock, 1)
            assert head.startswith(b"HTTP/1.1 200 OK")
            assert json.loads(body)["outputs"][0]["data"] == _expected(i)
        sock.sendall(b"".join(_request(i) for i in range(10, 15)))  # pipelined: five in one send
        answers = _read_responses(sock, 5)

    assert [json.loads(body)["outputs"][0]["data"] for _, body in answers] == [_expected(i) for i in range(10, 15)]
    assert all(head.startswith(b"HTTP/1.1 200 OK") for head, _ in answers)
