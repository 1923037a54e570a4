"""The serving harness's errors: one root, so a caller can catch everything the harness raises on purpose.

::

    HarnessError                       exit 1 from ``python -m serving_harness``
    ├── BadInput (ValueError)          exit 2: a flag, SH_* variable, settings file or model path is wrong
    │   └── BundleError                a bundle that is incomplete, tampered with or fails its golden check
    ├── RuntimeUnavailable (RuntimeError)  the runtime cannot run here (a missing package or no GPU)
    └── ServingError (HTTP 500)        answered to a client with an OIP error body ``{"error": "..."}``
        ├── InvalidRequest (400)       a name, datatype, shape or size that does not match the model
        ├── Unauthorized (401)         missing or wrong bearer token
        ├── ModelNotFound (404)        unknown model name or version
        ├── RouteNotFound (404)        no route at that path (answered in OIP form, not Starlette's text)
        ├── MethodNotAllowed (405)     a route that takes other methods; carries Allow
        ├── RequestBodyTimeout (408)   the body did not arrive within limits.body_timeout_s; closes the connection
        ├── PayloadTooLarge (413)      body above limits.max_body_bytes, rows above limits.max_request_rows
        ├── RateLimited (429)          per-token rate above rate_limit_rps; carries Retry-After
        ├── InferenceFailed (500)      the runtime raised while running a batch
        ├── ModelNotReady (503)        the model is loading or failed to load
        ├── QueueFull (503)            limits.max_queue_size requests already queued; carries Retry-After
        └── RequestTimeout (504)       no result within limits.request_timeout_s

``python -m serving_harness`` is the one place that turns a HarnessError into a one-line message and
its ``exit_code``. BadInput and RuntimeUnavailable keep their builtin bases (ValueError, RuntimeError)
so code that catches those (the workbench's gate, a sweep recording a failed variant) still does.
Anything else is a programming error and keeps its traceback.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import ValidationError

__all__ = [
    "BadInput",
    "BundleError",
    "HarnessError",
    "InferenceFailed",
    "InvalidRequest",
    "MethodNotAllowed",
    "ModelNotFound",
    "ModelNotReady",
    "PayloadTooLarge",
    "QueueFull",
    "RateLimited",
    "RequestBodyTimeout",
    "RequestTimeout",
    "RouteNotFound",
    "RuntimeUnavailable",
    "ServingError",
    "Unauthorized",
    "validation_message",
]


class HarnessError(Exception):
    """Base of every error the serving harness raises on purpose; ``exit_code`` is the command's status."""

    exit_code: ClassVar[int] = 1


class BadInput(HarnessError, ValueError):
    """The operator's input is wrong; the message names it and says what was expected."""

    exit_code = 2


class BundleError(BadInput):
    """A bundle that is incomplete, tampered with, or fails its golden check; the message names the file."""


class RuntimeUnavailable(HarnessError, RuntimeError):
    """The runtime cannot run here (a missing package or no GPU); the message says what to do."""


class ServingError(HarnessError):
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


class RouteNotFound(ServingError):
    status_code = 404


class MethodNotAllowed(ServingError):
    status_code = 405

    def __init__(self, message: str, *, allow: str) -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": self.allow}


class RequestBodyTimeout(ServingError):
    status_code = 408

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}  # the rest of the body may still come: do not read it as a request


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


def validation_message(exc: ValidationError) -> str:
    """pydantic's many-line report as one line: ``batching.max_batch_size: Input should be ... (and 1 more)``."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"
