"""HTTP body compression for the infer route: ``Content-Encoding`` in, ``Accept-Encoding`` out.

Requests: ``gzip`` and ``deflate`` (zlib-wrapped, RFC 9110; a raw deflate stream is accepted too, as
browsers and some clients send it) bodies are inflated before decoding, never past
``limits.max_body_bytes`` (413: a small compressed body cannot inflate without bound). ``identity``
or no header: as sent; any other encoding is refused with 400 (the OIP error for a request the
server cannot read).

Responses: a body of at least ``MIN_COMPRESS_BYTES`` is compressed when the client accepts gzip or
deflate (gzip first; ``q=0`` refuses one); smaller ones cost more to compress than they save.
tritonclient sends both headers with ``request_compression_algorithm`` and
``response_compression_algorithm``.
"""

from __future__ import annotations

import gzip
import zlib

from serving_harness.errors import InvalidRequest, PayloadTooLarge

__all__ = ["MIN_COMPRESS_BYTES", "compress", "decompress", "response_encoding"]

MIN_COMPRESS_BYTES = 1024
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_WBITS = -zlib.MAX_WBITS
_LEVEL = 1  # fast: the answer is on the request's critical path


def decompress(body: bytes, encoding: bytes | None, limit_bytes: int) -> bytes:
    """``body`` inflated per its Content-Encoding (None or identity: as it is)."""
    name = (encoding or b"identity").strip().lower()
    if name == b"identity":
        return body
    if name in (b"gzip", b"x-gzip"):
        return _inflate(body, _GZIP_WBITS, limit_bytes, "gzip")
    if name == b"deflate":
        wbits = _ZLIB_WBITS if body[:1] == b"\x78" else _RAW_WBITS  # zlib streams start with 0x78
        return _inflate(body, wbits, limit_bytes, "deflate")
    raise InvalidRequest(
        f"Content-Encoding {name.decode('latin-1')!r} is not supported; send gzip, deflate or identity"
    )


def _inflate(body: bytes, wbits: int, limit_bytes: int, name: str) -> bytes:
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit_bytes + 1)
    except zlib.error as exc:
        raise InvalidRequest(f"the {name} body cannot be decompressed: {exc}") from None
    if len(data) > limit_bytes:
        raise PayloadTooLarge(f"the body decompresses to over the limit of {limit_bytes} bytes")
    if not inflater.eof:
        raise InvalidRequest(f"the {name} body is truncated")
    return data


def response_encoding(accept_encoding: bytes | None) -> bytes | None:
    """The encoding to answer with (b"gzip" or b"deflate"), or None, from an Accept-Encoding value."""
    if not accept_encoding:
        return None
    accepted: dict[bytes, float] = {}
    for item in accept_encoding.lower().split(b","):
        name, _, params = item.partition(b";")
        accepted[name.strip()] = _quality(params)
    for name in (b"gzip", b"deflate"):
        if accepted.get(name, accepted.get(b"*", 0.0)) > 0:
            return name
    return None


def _quality(params: bytes) -> float:
    for param in params.split(b";"):
        key, _, value = param.partition(b"=")
        if key.strip() == b"q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def compress(payload: bytes, encoding: bytes) -> bytes:
    """``payload`` as ``encoding`` (b"gzip" or b"deflate", the zlib format HTTP names deflate)."""
    if encoding == b"gzip":
        return gzip.compress(payload, compresslevel=_LEVEL, mtime=0)
    return zlib.compress(payload, _LEVEL)
