"""Compare two or more runs: figures aligned by variant and step, ratios with bootstrap intervals,
and warnings when the runs were taken in different environments.

The first run is the baseline; every other run's figure is divided by the baseline's. The interval
of a ratio is a percentile bootstrap over the trials behind each figure, from the best source kept:

1. ``samples``: the per-trial values a variant record keeps (in-process trials);
2. the load step's windows in ``load/<variant>.json`` (served throughput and tail latency);
3. a normal with the row's mean, standard deviation and trial count (``*_std``, ``trials``) when
   only those were kept.

A figure with none of these (a p99 pooled over every call) gets its ratio without an interval.

Example::

    result = compare(["digits-cpu/0001-20261123T201500Z", "digits-cpu/0002-20261124T090000Z"])
    print(result.table[["variant", "step", "metric", "ratio", "ci_low", "ci_high", "verdict"]])
    for warning in result.warnings:
        print(warning)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import UsageError
from workbench.metrics import column_name, higher_is_better
from workbench.report.findings import load_details
from workbench.report.rundir import RESULTS_FILE, ReportStore, RunDir
from workbench.report.schema import RunEnvelope, VariantRecord
from workbench.report.table import records_to_frame

__all__ = ["DEFAULT_METRICS", "Comparison", "compare"]

DEFAULT_METRICS = ("throughput_rps", "latency_ms_p50", "latency_ms_p99")
KEY = ("variant", "mode", "step")
ENVIRONMENT_FIELDS = (
    ("cpu", "model"),
    ("cpu", "cores_logical"),
    ("cpu", "isa"),
    ("python", "version"),
    ("platform", "machine"),
)
# Spread columns a row carries when the raw trials were not kept: metric -> standard deviation column
STD_COLUMNS = {"throughput_rps": "throughput_rps_std", "latency_ms_p50": "latency_ms_p50_std"}

Key = tuple[str, str, str]


@dataclass(frozen=True)
class _Run:
    label: str
    envelope: RunEnvelope
    frame: pd.DataFrame
    records: dict[str, VariantRecord]
    samples: dict[Key, dict[str, list[float]]]


@dataclass(frozen=True)
class Comparison:
    """Runs side by side.

    ``table`` has one row per (variant, mode, step, metric, run) for every run after the first:
    ``baseline`` and ``value`` (the two figures), ``ratio`` (value / baseline), ``ci_low``/``ci_high``
    (its bootstrap interval, NaN without trials), ``source`` (where the trials came from) and
    ``verdict`` (better / worse / within noise / no spread). ``unmatched`` lists figures present in
    only some runs; ``warnings`` what differs between the runs' environments.
    """

    runs: tuple[str, ...]
    table: pd.DataFrame
    warnings: tuple[str, ...]
    unmatched: tuple[str, ...]


def compare(
    runs: Sequence[str | Path | RunDir],
    *,
    reports: str | Path = "reports",
    metrics: Sequence[str] = DEFAULT_METRICS,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Align ``runs`` (run references, paths or RunDirs; the first is the baseline) and compare ``metrics``."""
    if len(runs) < 2:
        raise UsageError("compare needs at least two runs (the first is the baseline)")
    columns = [column_name(m) for m in metrics]
    for metric in columns:
        higher_is_better(metric)  # an unknown metric fails here, listing the known ones
    loaded = [_load(run, reports) for run in runs]
    rng = np.random.default_rng(seed)
    rows = [
        row
        for other in loaded[1:]
        for row in _ratios(loaded[0], other, columns, confidence=confidence, resamples=resamples, rng=rng)
    ]
    table = pd.DataFrame(
        rows, columns=[*KEY, "metric", "run", "baseline", "value", "ratio", "ci_low", "ci_high", "source", "verdict"]
    )
    warnings = [w for other in loaded[1:] for w in _environment_warnings(loaded[0], other)]
    return Comparison(tuple(r.label for r in loaded), table, tuple(warnings), tuple(_unmatched(loaded)))


# ------------------------------------------------------------------------------------------------------ loading


def _load(ref: str | Path | RunDir, reports: str | Path) -> _Run:
    run = ref if isinstance(ref, RunDir) else ReportStore(reports).find(str(ref))
    envelope = run.read_envelope()
    records = run.read_variants()
    results = run.path / RESULTS_FILE
    frame = pd.read_parquet(results) if results.exists() else records_to_frame(run.run_id, records)
    measured = frame[frame["status"] == "ok"].dropna(subset=["mode", "step"]) if "mode" in frame else frame.iloc[0:0]
    samples = _record_samples(records)
    for variant, details in load_details(run, [r.variant for r in records]).items():
        for key, found in _window_samples(variant, details):
            samples.setdefault(key, {}).update({k: v for k, v in found.items() if k not in samples.get(key, {})})
    label = f"{run.recipe_name}/{run.run_id}"
    return _Run(label, envelope, measured.reset_index(drop=True), {r.variant: r for r in records}, samples)


def _record_samples(records: list[VariantRecord]) -> dict[Key, dict[str, list[float]]]:
    found: dict[Key, dict[str, list[float]]] = {}
    for record in records:
        for m in record.measurements:
            kept: Mapping[str, list[float]] = getattr(m, "samples", None) or {}
            if kept:
                found[(record.variant, m.mode, m.step)] = {column_name(k): list(v) for k, v in kept.items()}
    return found


def _window_samples(variant: str, details: dict[str, Any]) -> Iterator[tuple[Key, dict[str, list[float]]]]:
    """Per-window throughput and tail latency of each served step (``load/<variant>.json``)."""
    for step in details.get("steps", []):
        windows = step.get("windows") or []
        found: dict[str, list[float]] = {}
        for window in windows:
            for name, value in window.items():
                if (name == "throughput_rps" or name.startswith("latency_ms_")) and value is not None:
                    found.setdefault(name, []).append(float(value))
        if found:
            yield (variant, "served", str(step.get("step"))), found


# ------------------------------------------------------------------------------------------------------- ratios


def _ratios(
    base: _Run, other: _Run, metrics: list[str], *, confidence: float, resamples: int, rng: np.random.Generator
) -> Iterator[dict[str, Any]]:
    mine = {_key(r): r for _, r in other.frame.iterrows()}
    for _, row in base.frame.iterrows():
        key = _key(row)
        if key not in mine:
            continue
        for metric in metrics:
            a, b = _number(row.get(metric)), _number(mine[key].get(metric))
            if a is None or b is None or a == 0:
                continue
            draws_a = _draws(base.samples.get(key, {}), row, metric, resamples, rng)
            draws_b = _draws(other.samples.get(key, {}), mine[key], metric, resamples, rng)
            low, high, source = _interval(draws_a, draws_b, confidence)
            yield {
                **dict(zip(KEY, key, strict=True)),
                "metric": metric,
                "run": other.label,
                "baseline": a,
                "value": b,
                "ratio": b / a,
                "ci_low": low,
                "ci_high": high,
                "source": source,
                "verdict": _verdict(metric, low, high),
            }


def _key(row: pd.Series) -> Key:
    return str(row["variant"]), str(row["mode"]), str(row["step"])


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


@dataclass(frozen=True)
class _Draws:
    means: np.ndarray  # bootstrap distribution of the figure's mean
    source: str


def _draws(
    samples: Mapping[str, list[float]], row: pd.Series, metric: str, resamples: int, rng: np.random.Generator
) -> _Draws | None:
    """Resampled means of the trials behind ``row[metric]``, or None when nothing of its spread was kept."""
    kept = np.asarray(samples.get(metric, []), dtype=np.float64)
    if len(kept) >= 2:
        picks = rng.integers(0, len(kept), size=(resamples, len(kept)))
        return _Draws(kept[picks].mean(axis=1), "windows" if row.get("mode") == "served" else "trials")
    std, trials = _number(row.get(STD_COLUMNS.get(metric, ""))), _number(row.get("trials"))
    if std is None or trials is None or trials < 2:
        return None
    mean = float(row[metric])
    normal = rng.normal(mean, std, size=(resamples, int(trials)))
    return _Draws(normal.mean(axis=1), "normal")


def _interval(a: _Draws | None, b: _Draws | None, confidence: float) -> tuple[float, float, str | None]:
    if a is None or b is None:
        return float("nan"), float("nan"), None
    ratios = b.means / np.where(a.means == 0, np.nan, a.means)
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(ratios, [tail, 100 - tail])
    source = a.source if a.source == b.source else f"{a.source}/{b.source}"
    return float(low), float(high), source


def _verdict(metric: str, low: float, high: float) -> str:
    if np.isnan(low) or np.isnan(high):
        return "no spread"
    if low <= 1.0 <= high:
        return "within noise"
    up = low > 1.0
    return "better" if up == higher_is_better(metric) else "worse"


def _unmatched(runs: list[_Run]) -> list[str]:
    keys = [{_key(r) for _, r in run.frame.iterrows()} for run in runs]
    every = set.union(*keys)
    common = set.intersection(*keys)
    return [
        f"{variant} {mode} {step}: only in {', '.join(run.label for run, k in zip(runs, keys, strict=True) if (variant, mode, step) in k)}"
        for variant, mode, step in sorted(every - common)
    ]


# -------------------------------------------------------------------------------------------------- environment


def _environment_warnings(base: _Run, other: _Run) -> list[str]:
    """What differs between two runs' machines, libraries, thread settings and measurement settings."""
    a, b = base.envelope.environment, other.envelope.environment
    found = [
        f"{section}.{name} differs: {_show(a.get(section, {}).get(name))} vs {_show(b.get(section, {}).get(name))}"
        for section, name in ENVIRONMENT_FIELDS
        if a.get(section, {}).get(name) != b.get(section, {}).get(name)
    ]
    found += _dict_changes("library", a.get("libraries", {}), b.get("libraries", {}))
    found += _dict_changes("thread setting", a.get("threads", {}), b.get("threads", {}))
    if _gpu_names(a) != _gpu_names(b):
        found.append(f"GPUs differ: {_show(_gpu_names(a))} vs {_show(_gpu_names(b))}")
    found += _serving_changes(base, other)
    for section in ("measure", "load"):
        if base.envelope.recipe.get(section) != other.envelope.recipe.get(section):
            found.append(f"recipe {section} settings differ: figures were taken differently")
    return [f"{other.label} vs {base.label}: {w}" for w in found]


def _dict_changes(what: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return [
        f"{what} {k}: {_show(a.get(k))} vs {_show(b.get(k))}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]


def _serving_changes(base: _Run, other: _Run) -> list[str]:
    """Serving settings (runtime threads, batching, instances) of the same variant name in both runs."""
    found = []
    for name in sorted(set(base.records) & set(other.records)):
        a, b = _flat(base.records[name].serving), _flat(other.records[name].serving)
        changes = [
            f"{k} {_show(a.get(k))} → {_show(b.get(k))}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
        ]
        if changes:
            found.append(f"variant {name} serving settings differ: {', '.join(changes)}")
    return found


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _gpu_names(env: Mapping[str, Any]) -> list[str]:
    return [str(g.get("name", "?")) for g in env.get("gpus", [])]


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return "none" if value is None else str(value)
