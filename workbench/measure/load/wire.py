"""What the load generator and the workbench share: the per-request record, error kinds, arrival times.

The Locust processes import this module (stdlib and numpy only, nothing that gevent would mind) and
append one fixed-size record per request to a file of their own; the workbench reads those files
while the step runs and computes every figure itself, at nanosecond resolution.

A record holds three ``time.monotonic_ns()`` instants (one clock for every process on the host):
``intended`` (when the request was due: the schedule's instant in open loop, the send instant in
closed loop), ``start`` (when it was sent) and ``end`` (when its response was read). Latency is
``end - intended``, so a request the generator sent late still counts its wait: no coordinated omission.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterator
from enum import IntEnum
from typing import Literal

import numpy as np

__all__ = [
    "FLAG_WAITED_FOR_SLOT",
    "RECORD_DTYPE",
    "RECORD_STRUCT",
    "Kind",
    "arrival_offsets_ns",
]

# intended, start, end (ns), kind, flags, padding: 32 bytes, little-endian.
RECORD_STRUCT = struct.Struct("<qqqhHi")
RECORD_DTYPE = np.dtype(
    [("intended", "<i8"), ("start", "<i8"), ("end", "<i8"), ("kind", "<i2"), ("flags", "<u2"), ("pad", "<i4")]
)
FLAG_WAITED_FOR_SLOT = 1  # open loop: every in-flight slot was taken when the request fell due

Arrival = Literal["constant", "poisson"]


class Kind(IntEnum):
    """How a request ended. Everything but OK is an error of that kind."""

    OK = 0
    HTTP_4XX = 1
    HTTP_429 = 2
    HTTP_503 = 3
    HTTP_5XX = 4
    CONNECTION = 5
    TIMEOUT = 6
    BAD_RESPONSE = 7
    UNFINISHED = 8  # still in flight when the step's drain time ran out

    @property
    def label(self) -> str:
        return self.name.lower()


def kind_of_status(status_code: int) -> Kind:
    """The kind of an HTTP response that arrived (status 0 means no response: see the caller)."""
    if 200 <= status_code < 300:
        return Kind.OK
    special = {429: Kind.HTTP_429, 503: Kind.HTTP_503, 504: Kind.TIMEOUT}
    if status_code in special:
        return special[status_code]
    return Kind.HTTP_4XX if status_code < 500 else Kind.HTTP_5XX


def arrival_offsets_ns(
    *,
    rate_rps: float,
    arrival: Arrival,
    duration_s: float,
    end_rps: float | None = None,
    hold_s: float = 0.0,
    ramp_s: float = 0.0,
    seed: int = 0,
) -> Iterator[int]:
    """Intended send instants, in ns after the schedule's origin, up to ``duration_s``.

    The rate is ``rate_rps`` for ``hold_s`` seconds, then, when ``end_rps`` is given, moves linearly
    to it over ``ramp_s`` seconds and stays there. ``constant`` spaces arrivals evenly (with a random
    phase, so several generators do not send in lockstep); ``poisson`` draws exponential gaps. Both
    are drawn in unit-rate time and mapped through the inverse of the cumulative rate, so a ramp
    keeps its arrival law.
    """
    rng = random.Random(seed)
    ramp = _Ramp(rate_rps, rate_rps if end_rps is None else end_rps, hold_s, ramp_s if end_rps is not None else 0.0)
    unit = rng.random() if arrival == "constant" else 0.0
    while True:
        unit += rng.expovariate(1.0) if arrival == "poisson" else 1.0
        offset_s = ramp.instant(unit)
        if offset_s > duration_s:
            return
        yield round(offset_s * 1e9)


class _Ramp:
    """rate(t): r0 until ``hold_s``, linear to r1 over ``ramp_s``, then r1."""

    def __init__(self, r0: float, r1: float, hold_s: float, ramp_s: float) -> None:
        self.r0, self.r1, self.hold_s, self.ramp_s = r0, r1, hold_s, ramp_s
        self.held = r0 * hold_s  # arrivals due by the end of the hold
        self.ramped = self.held + (r0 + r1) / 2 * ramp_s  # ...and by the end of the ramp

    def instant(self, unit: float) -> float:
        """The instant t at which the cumulative rate reaches ``unit`` arrivals."""
        if unit <= self.held:
            return unit / self.r0
        if unit >= self.ramped or self.ramp_s <= 0:
            return self.hold_s + self.ramp_s + (unit - self.ramped) / self.r1
        left = unit - self.held
        slope = (self.r1 - self.r0) / self.ramp_s  # rate(tau) = r0 + slope * tau
        if abs(slope) < 1e-12:
            return self.hold_s + left / self.r0
        # slope/2 tau² + r0 tau - left = 0, the root in [0, ramp_s]
        return self.hold_s + (-self.r0 + math.sqrt(self.r0 * self.r0 + 2 * slope * left)) / slope
