"""Per-client token buckets: ``rate_per_s`` requests a second on average, bursts of up to ``burst``.

The key is who the caller is, as the server verified it (``protocol.rest``: the bearer token once it
checks out, else the peer address), never a header value taken on trust: a client that may pick its
own key gets a fresh bucket per request. At most ``max_clients`` keys are kept (least recently seen
forgotten first), so a flood of addresses costs bounded memory.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from time import monotonic

__all__ = ["RateLimiter"]


class RateLimiter:
    """``wait_s(client)`` is 0 when a request may go now, else the seconds until it may."""

    def __init__(self, rate_per_s: float, *, burst: float | None = None, max_clients: int = 10_000) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(1.0, rate_per_s)
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def wait_s(self, client: str) -> float:
        """Take a token for ``client`` if there is one (return 0), else return how long to wait."""
        now = monotonic()
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate_per_s)
        wait_s = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait_s = (1.0 - tokens) / self.rate_per_s
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)  # forget the least recently seen client
        return wait_s

    @staticmethod
    def retry_after_s(wait_s: float) -> int:
        """Retry-After is whole seconds; never 0 for a refused request."""
        return max(1, math.ceil(wait_s))
