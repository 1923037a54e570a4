"""In-process measurement: one runtime, one batch size, warm-up then repeated timed trials.

Each call's latency is taken with ``perf_counter_ns``; the trials give the spread (throughput mean
and standard deviation across trials, and a bootstrap interval of the mean).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from serving_harness.runtimes.base import Runtime
from workbench.data.base import Arrays, Dataset
from workbench.recipe.spec import MeasureSpec
from workbench.stats import bootstrap_ci, coefficient_of_variation, latency_summary_ms

logger = logging.getLogger(__name__)

DISTINCT_BATCHES = 8  # rotate inputs so caches do not flatter the figures
NOISY_CV = 0.10  # throughput spread across trials above this is flagged


@dataclass(frozen=True)
class InprocessResult:
    batch_size: int
    iterations: int
    trials: int
    latency_ms: dict[str, float | None]
    latency_ms_p50_std: float
    throughput_rps: float
    throughput_rps_std: float
    throughput_rps_ci: tuple[float, float]
    noisy: bool
    # One value per trial, for the CI gate: throughput_rps and the latency figures a trial can carry.
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def throughput_items_per_s(self) -> float:
        return self.throughput_rps * self.batch_size


def _input_batches(dataset: Dataset, batch_size: int) -> list[Arrays]:
    count = min(DISTINCT_BATCHES, max(1, len(dataset) // batch_size))
    return [dataset.batch(i * batch_size, batch_size) for i in range(count)]


def _trial(runtime: Runtime, batches: list[Arrays], spec: MeasureSpec) -> tuple[np.ndarray, float]:
    """Run until the trial's duration and minimum count are met; return (latencies_ns, wall_s)."""
    latencies: list[int] = []
    deadline = time.perf_counter() + spec.trial_duration_s
    start = time.perf_counter()
    while len(latencies) < spec.max_trial_iters:
        batch = batches[len(latencies) % len(batches)]
        t0 = time.perf_counter_ns()
        runtime.infer(batch)
        latencies.append(time.perf_counter_ns() - t0)
        if len(latencies) >= spec.min_trial_iters and time.perf_counter() >= deadline:
            break
    return np.asarray(latencies, dtype=np.int64), time.perf_counter() - start


def measure_inprocess(runtime: Runtime, dataset: Dataset, batch_size: int, spec: MeasureSpec) -> InprocessResult:
    """Warm up, then ``spec.trials`` timed trials at ``batch_size``."""
    batches = _input_batches(dataset, batch_size)
    for i in range(spec.warmup_iters):
        runtime.infer(batches[i % len(batches)])
    samples: list[np.ndarray] = []
    rates: list[float] = []
    p50s: list[float] = []
    for _ in range(spec.trials):
        latencies, wall_s = _trial(runtime, batches, spec)
        samples.append(latencies)
        rates.append(len(latencies) / wall_s)
        p50s.append(float(np.percentile(latencies, 50)) / 1e6)
    pooled = np.concatenate(samples)
    logger.debug("batch %d: %d calls over %d trials", batch_size, len(pooled), spec.trials)
    cv = coefficient_of_variation(rates)
    return InprocessResult(
        batch_size=batch_size,
        iterations=len(pooled),
        trials=spec.trials,
        latency_ms=latency_summary_ms(pooled),
        latency_ms_p50_std=round(float(np.std(p50s, ddof=1)), 4),
        throughput_rps=float(np.mean(rates)),
        throughput_rps_std=float(np.std(rates, ddof=1)),
        throughput_rps_ci=bootstrap_ci(rates),
        noisy=cv > NOISY_CV,
        samples=trial_samples(samples, rates),
    )


def trial_samples(latencies_ns: list[np.ndarray], rates: list[float]) -> dict[str, list[float]]:
    """Per-trial figures: ``throughput_rps`` and each ``latency_ms_*`` that every trial had enough calls for."""
    found: dict[str, list[float]] = {"throughput_rps": [round(r, 3) for r in rates]}
    summaries = [latency_summary_ms(trial) for trial in latencies_ns]
    for key in ("p50", "p90", "p99", "mean"):
        values = [summary[key] for summary in summaries]
        if values and all(v is not None for v in values):
            found[f"latency_ms_{key}"] = [float(v) for v in values if v is not None]
    return found
