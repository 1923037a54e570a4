"""The SLA search: bisection on the arrival rate for the highest rate that meets a latency bound.

After MLPerf's Server scenario: a probe offers a rate for at least a minimum duration and request
count and passes when its latency percentile stays within the bound, its errors within the allowed
rate, and the server kept up (goodput near the offered rate). The lower end of the bracket must
pass first; the search then halves the bracket until it is narrower than ``precision`` (relative)
or the probes run out, and reports the highest rate that passed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from workbench.recipe.profiles import SlaSearchProfile

__all__ = ["Probe", "SlaOutcome", "search_rate"]

CALIBRATION_HEADROOM = 1.1  # the upper bracket sits this far above the closed-loop capacity
LOW_FRACTION = 0.1  # the default lower bracket, as a share of the upper


@dataclass(frozen=True)
class Probe:
    """One probe: the offered rate and whether it met the SLA (``why`` says what failed)."""

    rate_rps: float
    passed: bool
    why: str = ""


@dataclass(frozen=True)
class SlaOutcome:
    """The highest passing rate (None when even the lowest failed) and every probe, in order."""

    rate_rps: float | None
    latency_ms_max: float
    percentile: str
    low_rps: float
    high_rps: float
    converged: bool
    probes: list[Probe] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "rate_rps": self.rate_rps,
            "latency_ms_max": self.latency_ms_max,
            "percentile": self.percentile,
            "bracket_rps": [round(self.low_rps, 3), round(self.high_rps, 3)],
            "converged": self.converged,
            "probes": [{"rate_rps": round(p.rate_rps, 3), "passed": p.passed, "why": p.why} for p in self.probes],
        }


def bracket(profile: SlaSearchProfile, calibrate: Callable[[], float]) -> tuple[float, float]:
    """The starting (low, high) rates; ``calibrate`` measures the capacity when high is not given."""
    high = profile.high_rps or max(calibrate(), 1e-3) * CALIBRATION_HEADROOM
    low = profile.low_rps or high * LOW_FRACTION
    return min(low, high * 0.99), high


def search_rate(profile: SlaSearchProfile, probe: Callable[[float], Probe], low: float, high: float) -> SlaOutcome:
    """Bisect ``[low, high]`` with ``probe`` until the bracket is within ``profile.precision``."""
    probes = [probe(low)]
    if not probes[0].passed:
        return _outcome(profile, None, low, high, probes, converged=True)
    best = low
    while len(probes) < profile.max_probes and (high - best) / best > profile.precision:
        middle = (best + high) / 2
        probes.append(probe(middle))
        if probes[-1].passed:
            best = middle
        else:
            high = middle
    converged = (high - best) / best <= profile.precision
    return _outcome(profile, best, low, high, probes, converged=converged)


def _outcome(
    profile: SlaSearchProfile, rate: float | None, low: float, high: float, probes: list[Probe], *, converged: bool
) -> SlaOutcome:
    return SlaOutcome(
        rate_rps=None if rate is None else round(rate, 3),
        latency_ms_max=profile.latency_ms_max,
        percentile=profile.latency_percentile,
        low_rps=low,
        high_rps=high,
        converged=converged,
        probes=probes,
    )
