"""Change points of the performance history on series drawn from real runs' spread.

    .venv/bin/python benchmarks/history_changepoints.py               # 80 real runs, 200 series each (~1.5 min)
    .venv/bin/python benchmarks/history_changepoints.py --runs 20 --series 20   # a quick check that it runs

The history tests use simulated series with a fixed 3% noise. Here the noise is this machine's own: ``--runs``
back-to-back short in-process measurements of one small real ONNX model (what consecutive CI runs of one
commit give: each run's figure is the median of its trials), one after the other, as a history would hold
them. Their figures, divided by their median, are the real run-to-run spread. From them:

- flat, resampled: ``--series`` series of ``--length`` points drawn with replacement from the real spread;
  a false alarm is any change point (``workbench history`` would mark one);
- flat, in order: every window of ``--length`` consecutive real runs (keeps the machine's drift, which
  resampling hides); a false alarm as above;
- creep: the resampled flat series times five +3% steps (``--length``/6 runs apart); found when
  ``gate --history`` would fail on it (a worse change point the head still sits behind).

Each rate is printed with its Wilson 95% interval, for throughput and p50 latency. Targets: a creep found in
≥ 90% of series, ≤ 5% false change points on flat series.
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from _gate_support import dataset, load, mlp_model, rate_line

from workbench.measure.inprocess import measure_inprocess
from workbench.recipe.spec import MeasureSpec
from workbench.report.history import Point, Series, SeriesKey, find_change_points, regressions_at_head

METRICS = {"throughput_rps": True, "latency_ms_p50": False}  # name → higher is better


def real_runs(count: int, trials: int, trial_s: float) -> dict[str, np.ndarray]:
    """``count`` back-to-back short measurements of one model: each run's median figure per metric."""
    spec = MeasureSpec(batch_sizes=(1,), trials=trials, trial_duration_s=trial_s, warmup_iters=20, min_trial_iters=20)
    with tempfile.TemporaryDirectory() as folder:
        runtime, data = load(mlp_model(Path(folder) / "mlp.onnx")), dataset()
        figures: dict[str, list[float]] = {name: [] for name in METRICS}
        for index in range(count):
            result = measure_inprocess(runtime, data, 1, spec)
            for name in METRICS:
                figures[name].append(float(np.median(result.samples[name])))
            if (index + 1) % 20 == 0:
                print(f"  {index + 1}/{count} runs", flush=True)
    return {name: np.asarray(values) for name, values in figures.items()}


def robust_cv(values: np.ndarray) -> float:
    """Run-to-run spread: 1.4826 × MAD / median (a standard deviation's share, robust to outliers)."""
    median = float(np.median(values))
    return 1.4826 * float(np.median(np.abs(values - median))) / median


def series_of(values: np.ndarray, metric: str) -> Series:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    points = tuple(
        Point(f"{i:04d}", start + timedelta(hours=i), f"{i:040x}", float(v)) for i, v in enumerate(values)
    )  # fmt: skip
    return Series(SeriesKey("bench", "mlp", "inprocess b1", metric, "this machine"), "this machine", points)


def creep(length: int, higher_is_better: bool) -> np.ndarray:
    """Five +3% slowdowns, evenly spaced: throughput ÷ 1.03 per step, latency × 1.03."""
    per_level = length // 6
    factors = np.ones(length)
    for level in range(1, 6):
        factors[level * per_level :] *= 1 / 1.03 if higher_is_better else 1.03
    return factors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=80, help="real back-to-back runs measured here")
    parser.add_argument("--trials", type=int, default=5, help="trials per run (a run's figure is their median)")
    parser.add_argument("--trial-s", type=float, default=0.1)
    parser.add_argument("--series", type=int, default=200, help="resampled series per kind")
    parser.add_argument("--length", type=int, default=36, help="points per series (runs on the timeline)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.runs < args.length:
        parser.error(f"--runs ({args.runs}) must be at least --length ({args.length})")
    print(f"measuring {args.runs} real runs ({args.trials} × {args.trial_s:g} s each), back to back", flush=True)
    runs = real_runs(args.runs, args.trials, args.trial_s)
    rng = np.random.default_rng(args.seed)
    for metric, higher_is_better in METRICS.items():
        residuals = runs[metric] / np.median(runs[metric])
        print(f"{metric}: real run-to-run spread {robust_cv(runs[metric]):.1%} (robust CV over {args.runs} runs)")
        shifts = find_change_points(runs[metric], higher_is_better=higher_is_better)
        print("  the real sequence itself: " + (", ".join(
            f"run {c.index + 1} {c.relative_change:+.1%}" for c in shifts) or "no change point"))  # fmt: skip
        drawn = [rng.choice(residuals, size=args.length, replace=True) for _ in range(args.series)]
        windows = [residuals[i : i + args.length] for i in range(args.runs - args.length + 1)]
        flat_drawn = sum(bool(find_change_points(s, higher_is_better=higher_is_better)) for s in drawn)
        flat_order = sum(bool(find_change_points(w, higher_is_better=higher_is_better)) for w in windows)
        factors = creep(args.length, higher_is_better)
        found = sum(bool(regressions_at_head(series_of(s * factors, metric))) for s in drawn)
        print("  " + rate_line("false change points, flat resampled", flat_drawn, len(drawn), target="≤ 5%"))
        print("  " + rate_line("false change points, flat in run order", flat_order, len(windows), target="≤ 5%"))
        print("  " + rate_line("creep of five +3% steps found", found, len(drawn), target="≥ 90%"), flush=True)


if __name__ == "__main__":
    main()
