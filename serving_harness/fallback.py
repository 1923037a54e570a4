"""Fallback: a bad optimization degrades to slow, not down.

A bundle may carry the baseline variant next to the optimized one. When the primary fails a request
(the runtime raised: 500), does not answer within its own request timeout (504), or could not load at
all (503 not ready), the fallback answers the same request, and ``sh_fallback_total{reason}`` counts
it on the primary. A full queue (503 with Retry-After) is not a failure of the model but back-pressure:
it is passed on, never sent to the fallback, which would only double the load.

The fallback's own series (``version="<v>+fallback"``) show its batches and readiness; the request
itself (status, latency, queue and compute time) is counted once, on the primary's series, as the
client saw it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from serving_harness.batcher import InferOutcome
from serving_harness.errors import InferenceFailed, ModelNotReady, RequestTimeout, ServingError

if TYPE_CHECKING:
    from serving_harness.model import ServedModel

__all__ = ["FALLBACK_REASONS", "infer_with_fallback"]

# The primary's failure -> the reason label on sh_fallback_total
FALLBACK_REASONS: dict[type[ServingError], str] = {
    InferenceFailed: "error",
    RequestTimeout: "timeout",
    ModelNotReady: "unavailable",
}


async def infer_with_fallback(
    primary: ServedModel, fallback: ServedModel, inputs: dict[str, np.ndarray], rows: int
) -> InferOutcome:
    """The primary's outcome, or the fallback's when the primary failed in a way it can cover."""
    try:
        return await primary.infer_here(inputs, rows)
    except (InferenceFailed, RequestTimeout, ModelNotReady) as exc:
        if not fallback.serving:
            raise  # nothing to fall back on: the client sees the primary's error
        primary.metrics.fallback_used(FALLBACK_REASONS[type(exc)])
        return await fallback.infer_here(inputs, rows)
