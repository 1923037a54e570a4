"""Errors the server turns into HTTP responses with an OIP error body ``{"error": "..."}``.

::

    ServingError (500)
    ├── InvalidRequest (400)      a name, datatype, shape or size that does not match the model
    ├── Unauthorized (401)        missing or wrong bearer token
    ├── ModelNotFound (404)       unknown model name or version
    ├── PayloadTooLarge (413)     body above limits.max_body_bytes
    ├── RateLimited (429)         per-token rate above rate_limit_rps; carries Retry-After
    ├── InferenceFailed (500)     the runtime raised while running a batch
    ├── ModelNotReady (503)       the model is loading or failed to load
    ├── QueueFull (503)           limits.max_queue_size requests already queued; carries Retry-After
    └── RequestTimeout (504)      no result within limits.request_timeout_s
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "InferenceFailed",
    "InvalidRequest",
    "ModelNotFound",
    "ModelNotReady",
    "PayloadTooLarge",
    "QueueFull",
    "RateLimited",
    "RequestTimeout",
    "ServingError",
    "Unauthorized",
]


class ServingError(Exception):
    """Base of every error the server answers with; ``status_code`` is the HTTP status."""

    status_code: ClassVar[int] = 500

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        """Extra response headers (Retry-After, WWW-Authenticate)."""
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(self.retry_after_s)}


class InvalidRequest(ServingError):
    status_code = 400


class Unauthorized(ServingError):
    status_code = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ModelNotFound(ServingError):
    status_code = 404


class PayloadTooLarge(ServingError):
    status_code = 413


class RateLimited(ServingError):
    status_code = 429


class InferenceFailed(ServingError):
    status_code = 500


class ModelNotReady(ServingError):
    status_code = 503


class QueueFull(ServingError):
    status_code = 503


class RequestTimeout(ServingError):
    status_code = 504
