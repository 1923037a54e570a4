"""Canary: two versions of one model behind one endpoint, with a weighted split.

A request whose path names no version goes to the candidate with probability ``weight``, else to the
stable version. With ``sticky_header`` (for example ``x-request-id`` or a user id header), a request
that carries the header is routed by a hash of its value instead, so one caller always meets the same
version; raising the weight only moves callers from stable to candidate, never back. A path with a
version (``/v2/models/m/versions/1.3.0/infer``) always reaches that version. Every metric carries the
``version`` label, and ``sh_canary_weight{model,version}`` says each version's share.

``GET /v2/canary`` returns the split and each version's SLO budgets; ``POST /v2/canary`` with
``{"weight": 0}`` rolls back at once (``{"weight": 1}`` sends everything to the candidate). Changing the
weight needs the bearer token when the server has one, and otherwise a loopback client.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from serving_harness.errors import InvalidRequest, ServingError, Unauthorized

__all__ = ["CANARY_PATH", "CanarySplit", "canary_routes"]

CANARY_PATH = "/v2/canary"
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_HASH_SCALE = float(1 << 64)


class CanarySplit:
    """Which of two versions of ``model`` a request goes to.

    Example::

        split = CanarySplit("digits", stable="1.2.0", candidate="1.3.0", weight=0.1, sticky_header="x-user")
    """

    def __init__(
        self,
        model: str,
        *,
        stable: str,
        candidate: str,
        weight: float,
        sticky_header: str | None = None,
        seed: int | None = None,
        slo: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if stable == candidate:
            raise ValueError(f"the canary needs two different versions, got {stable!r} twice")
        self.model = model
        self.stable = stable
        self.candidate = candidate
        self.weight = _checked(weight)
        self.sticky_header = sticky_header.lower() if sticky_header else None
        self._header_key = self.sticky_header.encode("latin-1") if self.sticky_header else b""
        self._random = random.Random(seed)
        self._lock = threading.Lock()  # weight changes come from a request handler; reads need none
        self.slo = {version: dict(figures) for version, figures in (slo or {}).items()}

    def choose(self, headers: Mapping[bytes, bytes]) -> str:
        """The version for a request with these (lower-case, raw) headers."""
        if self._header_key:
            value = headers.get(self._header_key)
            if value:
                return self.candidate if sticky_share(value) < self.weight else self.stable
        return self.candidate if self._random.random() < self.weight else self.stable

    def set_weight(self, weight: float) -> None:
        """The candidate's new share of traffic (0 rolls back, 1 sends everything to it)."""
        with self._lock:
            self.weight = _checked(weight)

    def state(self) -> dict[str, Any]:
        """The split as JSON: model, versions, weight, sticky header, each version's SLO."""
        return {
            "model": self.model,
            "stable": self.stable,
            "candidate": self.candidate,
            "weight": self.weight,
            "sticky_header": self.sticky_header,
            "slo": self.slo,
        }

    def collector(self) -> _WeightCollector:
        """A Prometheus collector of ``sh_canary_weight``."""
        return _WeightCollector(self)


def sticky_share(value: bytes) -> float:
    """A caller's fixed place in [0, 1): the first 8 bytes of blake2b of its header value."""
    digest = hashlib.blake2b(value, digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SCALE


def _checked(weight: float) -> float:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the canary weight is a share of traffic in [0, 1], got {weight}")
    return float(weight)


class _WeightCollector:
    def __init__(self, split: CanarySplit) -> None:
        self.split = split

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "sh_canary_weight", "Share of unversioned requests each version gets.", labels=["model", "version"]
        )
        family.add_metric([self.split.model, self.split.stable], 1.0 - self.split.weight)
        family.add_metric([self.split.model, self.split.candidate], self.split.weight)
        yield family


def canary_routes(split: CanarySplit, authorize: Callable[[str], None], *, has_token: bool) -> list[Route]:
    """``GET`` and ``POST /v2/canary``; ``authorize`` checks the bearer token when ``has_token``."""

    async def read(request: Request) -> Response:
        try:
            if has_token:  # the split names the model: not for a caller without the token
                authorize(request.headers.get("authorization", ""))
        except ServingError as exc:
            return _json({"error": exc.message}, exc.status_code)
        return _json(split.state())

    async def change(request: Request) -> Response:
        try:
            _admit(request, authorize, has_token)
            split.set_weight(_weight(await request.body()))
        except ServingError as exc:
            return _json({"error": exc.message}, exc.status_code)
        return _json(split.state())

    return [Route(CANARY_PATH, read, methods=["GET"]), Route(CANARY_PATH, change, methods=["POST"])]


def _admit(request: Request, authorize: Callable[[str], None], has_token: bool) -> None:
    if has_token:
        authorize(request.headers.get("authorization", ""))  # raises unless it is the server's token
        return
    client = request.client.host if request.client else ""
    if client not in _LOOPBACK:
        raise Unauthorized("changing the canary from another host needs a bearer token: set SH_AUTH_TOKEN")


def _weight(body: bytes) -> float:
    try:
        document = orjson.loads(body)
        return _checked(float(document["weight"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(f'send {{"weight": <share in [0, 1]>}}: {exc}') from None


def _json(document: dict[str, Any], status_code: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status_code, media_type="application/json")
