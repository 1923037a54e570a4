"""A lean HTTP/1.1 keep-alive client for the load generator's hot path (used inside Locust, under gevent).

At sub-millisecond latencies a Python HTTP client's own work is a visible share of what it measures:
building headers, parsing the response, the library's bookkeeping. This client sends a request that
was encoded once, in one ``sendall``, and reads the response by its ``Content-Length`` (or chunked
framing); the clock starts just before the write and stops when the last byte is in, as with wrk.
Plain ``http://`` only; ``transport: locust`` in a profile uses Locust's FastHttpSession instead.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["HttpError", "WireConnection", "WireResponse", "encode_request"]

RECV_BYTES = 1 << 16
MAX_HEAD_BYTES = 1 << 16


class HttpError(Exception):
    """The peer broke HTTP framing (the request is a ``bad_response``)."""


@dataclass(frozen=True)
class WireResponse:
    status: int
    body: bytes


def encode_request(url: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A whole POST request (request line, headers, body) for ``url`` + ``path``."""
    netloc = urlsplit(url).netloc
    lines = [f"POST {path} HTTP/1.1", f"Host: {netloc}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items() if name.lower() not in {"host", "content-length"}]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class WireConnection:
    """One keep-alive connection; reconnects after the peer closes or an error."""

    def __init__(self, url: str, timeout_s: float, *, blocking: bool = False) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"the wire transport speaks plain http only, not {url!r}")
        self.address = (parts.hostname, parts.port or 80)
        self.timeout_s = timeout_s
        self.blocking = blocking
        self._sock: socket.socket | None = None
        self._buffer = b""

    def request(self, data: bytes) -> WireResponse:
        """Send ``data`` (a whole request) and read the whole response."""
        sock = self._sock or self._connect()
        try:
            sock.sendall(data)
            return self._read_response(sock)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._buffer = None, b""

    def _connect(self) -> socket.socket:
        if self.blocking:
            sock = _os_socket(self.address, self.timeout_s)
        else:
            sock = socket.create_connection(self.address, timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        return sock

    def _read_response(self, sock: socket.socket) -> WireResponse:
        head = self._read_head(sock)
        status, fields = _parse_head(head)
        if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = self._read_chunked(sock)
        else:
            body = self._read_exactly(sock, int(fields.get(b"content-length", b"0")))
        if fields.get(b"connection", b"").lower() == b"close":
            self.close()
        return WireResponse(status=status, body=body)

    def _fill(self, sock: socket.socket) -> None:
        chunk = sock.recv(RECV_BYTES)
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        self._buffer += chunk

    def _read_head(self, sock: socket.socket) -> bytes:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise HttpError("response head too large")
            self._fill(sock)
        head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
        return head

    def _read_exactly(self, sock: socket.socket, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill(sock)
        body, self._buffer = self._buffer[:size], self._buffer[size:]
        return body

    def _read_line(self, sock: socket.socket) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            self._fill(sock)
        line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
        return line

    def _read_chunked(self, sock: socket.socket) -> bytes:
        parts = []
        while size := int(self._read_line(sock).split(b";")[0], 16):
            parts.append(self._read_exactly(sock, size))
            self._read_line(sock)
        while self._read_line(sock):  # trailers, then the empty line
            pass
        return b"".join(parts)


def _os_socket(address: tuple[str, int], timeout_s: float) -> socket.socket:
    """A socket that blocks the OS thread, even where gevent patched ``socket``: a process whose only
    sender is one closed-loop user loses nothing by blocking, and skips the event loop's wake-up."""
    try:
        from gevent import monkey

        factory: type[socket.socket] = monkey.get_original("socket", "socket")
    except ImportError:
        factory = socket.socket
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = factory(family, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    sock.connect(address)
    return sock


def _parse_head(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    lines = head.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
        raise HttpError(f"not an HTTP/1.x status line: {lines[0][:40]!r}")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    return int(status_line[1]), fields
