"""Statistics over raw samples: percentiles at µs precision and intervals (after optimum-benchmark's
tracker: percentiles come from the raw samples, never from pre-rounded figures)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

PERCENTILES: dict[str, float] = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p999": 99.9}
# Fewest samples for which a percentile means something: p99 needs hundreds.
MIN_SAMPLES: dict[str, int] = {"p50": 10, "p90": 50, "p95": 100, "p99": 300, "p999": 3000}


def latency_summary_ms(samples_ns: np.ndarray) -> dict[str, float | None]:
    """p50..p99.9, max and mean in milliseconds (µs precision kept as float).

    A percentile taken from fewer samples than MIN_SAMPLES asks for is None, not a guess.
    """
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    summary: dict[str, float | None] = {}
    for name, q in PERCENTILES.items():
        enough = len(ms) >= MIN_SAMPLES[name]
        summary[name] = round(float(np.percentile(ms, q)), 3) if enough else None
    summary["max"] = round(float(ms.max()), 3)
    summary["mean"] = round(float(ms.mean()), 3)
    return summary


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values``."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) < 2:
        value = float(statistic(data)) if len(data) else float("nan")
        return value, value
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(data), size=(resamples, len(data)))
    stats = np.apply_along_axis(statistic, 1, data[picks])
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(stats, tail)), float(np.percentile(stats, 100 - tail))


def coefficient_of_variation(values: Sequence[float] | np.ndarray) -> float:
    data = np.asarray(values, dtype=np.float64)
    mean = float(data.mean()) if len(data) else 0.0
    return float(data.std(ddof=1) / mean) if len(data) > 1 and mean > 0 else 0.0
