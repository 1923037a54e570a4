"""Compare two or more runs: the CI gate's comparison, shown without thresholds.

Each run is read by the gate's loader (``workbench.gate.sources.run_source``): a case is a variant at
one measured case (an in-process batch size, ``b32``, or a served load step, ``c4``) and each of its figures keeps its per-trial
values (in-process trials, served windows), or only mean, std and n, or one exact value. The first
run is the baseline; for every other run, each metric of each case both runs measured is compared by
the gate's own ``compare_figures`` (``workbench.stats``), so the two never disagree:

========================  ============================================  ==============
what the runs kept        interval of the ratio (95%)                   test
========================  ============================================  ==============
per-trial values          bootstrap of the ratio of medians             Mann-Whitney U
mean, std and n only      delta-method Welch interval                   Welch's t
one exact value           none: the ratio is exact                      none
========================  ============================================  ==============

``ratio`` is candidate / baseline (of medians, or means for a summary). The verdict reads the
interval: ``faster`` (``better`` for a figure that is not a speed) when all of it is on the good
side of 1, ``slower`` (``worse``) when all of it is on the bad side, ``no clear change`` otherwise.
The gate calls a regression only where the interval also clears its threshold (and the rank test
agrees), so a gate failure is always a ``slower`` here, never the other way round.

Example::

    result = compare(["digits-cpu/0001-20261123T201500Z", "digits-cpu/0002-20261124T090000Z"])
    print(result.table[["variant", "case", "metric", "ratio", "ci_low", "ci_high", "verdict"]])
    for warning in result.warnings:
        print(warning)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.errors import UsageError
from workbench.gate.rules import compare_figures
from workbench.gate.sources import Figure, Source, find_run, run_source
from workbench.metrics import column_name, higher_is_better
from workbench.report.rundir import RunDir
from workbench.report.schema import RunEnvelope, VariantRecord
from workbench.stats import Comparison

__all__ = ["COLUMNS", "DEFAULT_METRICS", "RunComparison", "compare"]

DEFAULT_METRICS = ("throughput_rps", "latency_ms_p50", "latency_ms_p99")
COLUMNS = (
    "variant", "mode", "case", "metric", "run", "baseline", "value", "ratio", "ci_low", "ci_high",
    "p_value", "n_baseline", "n_candidate", "method", "verdict",
)  # fmt: skip
ENVIRONMENT_FIELDS = (
    ("cpu", "model"),
    ("cpu", "cores_logical"),
    ("cpu", "isa"),
    ("python", "version"),
    ("platform", "machine"),
)
SPEED_PREFIXES = ("latency_ms", "throughput")  # figures whose change reads as faster / slower
CASE_SEPARATOR = " · "  # how workbench.gate.sources.case_key joins variant and case


@dataclass(frozen=True)
class _Run:
    label: str
    envelope: RunEnvelope
    records: dict[str, VariantRecord]
    source: Source


@dataclass(frozen=True)
class RunComparison:
    """Runs side by side.

    ``table`` has one row per (variant, mode, case, metric, run) for every run after the first (columns
    ``COLUMNS``): ``baseline`` and ``value`` (each side's median, or mean), ``ratio`` (value / baseline),
    ``ci_low``/``ci_high`` (its 95% interval), ``p_value`` (one-sided, "the run is worse"), ``method``
    (interval and test) and ``verdict`` (faster / slower / better / worse / no clear change).
    ``unmatched`` lists cases or figures present in only some runs; ``warnings`` what differs between
    the runs' environments.
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
) -> RunComparison:
    """Align ``runs`` (run references, paths or RunDirs; the first is the baseline) and compare ``metrics``."""
    if len(runs) < 2:
        raise UsageError("compare needs at least two runs (the first is the baseline)")
    columns = [column_name(m) for m in metrics]
    for metric in columns:
        higher_is_better(metric)  # an unknown metric fails here, listing the known ones
    loaded = [_load(find_run(run, reports=reports)) for run in runs]
    rows = [row for other in loaded[1:] for row in _rows(loaded[0], other, columns)]
    warnings = [w for other in loaded[1:] for w in _environment_warnings(loaded[0], other)]
    unmatched = _unmatched(loaded) + [line for other in loaded[1:] for line in _one_sided(loaded[0], other, columns)]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return RunComparison(tuple(r.label for r in loaded), table, tuple(warnings), tuple(unmatched))


def _load(run: RunDir) -> _Run:
    records = {r.variant: r for r in run.read_variants()}
    return _Run(run.label, run.read_envelope(), records, run_source(run))


# ------------------------------------------------------------------------------------------------------- ratios


def _rows(base: _Run, other: _Run, metrics: list[str]) -> Iterator[dict[str, Any]]:
    for key in base.source.cases:
        if key not in other.source.cases:
            continue
        for metric in metrics:
            a, b = base.source.cases[key].get(metric, Figure()), other.source.cases[key].get(metric, Figure())
            if a.empty or b.empty:
                continue
            comparison = compare_figures(a, b, higher_is_worse=not higher_is_better(metric))
            yield {**_where(base.source, key), "metric": metric, "run": other.label, **_ratio(comparison, metric)}


def _where(source: Source, key: str) -> dict[str, str]:
    variant, _, case = key.rpartition(CASE_SEPARATOR)
    return {"variant": variant, "mode": source.modes.get(key, ""), "case": case}


def _ratio(c: Comparison, metric: str) -> dict[str, Any]:
    """The gate's oriented relative change (positive is worse) as a plain ratio: candidate / baseline."""
    sign = -1.0 if higher_is_better(metric) else 1.0
    low, high = sorted((1 + sign * c.ci_low, 1 + sign * c.ci_high))
    return {
        "baseline": c.baseline,
        "value": c.candidate,
        "ratio": 1 + sign * c.change,
        "ci_low": low,
        "ci_high": high,
        "p_value": c.p_value,
        "n_baseline": c.n_baseline,
        "n_candidate": c.n_candidate,
        "method": c.interval if c.test == "none" else f"{c.interval}; {c.test}",
        "verdict": _verdict(c, metric),
    }


def _verdict(c: Comparison, metric: str) -> str:
    """``slower``/``worse`` when all of the interval is worse, ``faster``/``better`` when all of it is
    better, else ``no clear change`` (an exact figure's interval is its change)."""
    if not (math.isfinite(c.ci_low) and math.isfinite(c.ci_high)) or c.ci_low <= 0 <= c.ci_high:
        return "no clear change"
    speed = metric.startswith(SPEED_PREFIXES)
    if c.ci_low > 0:
        return "slower" if speed else "worse"
    return "faster" if speed else "better"


def _one_sided(base: _Run, other: _Run, metrics: list[str]) -> list[str]:
    """Figures one run has per-trial values (or a summary) for and the other has not."""
    found = []
    for key in base.source.cases.keys() & other.source.cases.keys():
        for metric in metrics:
            sides = [run for run in (base, other) if not run.source.cases[key].get(metric, Figure()).empty]
            if len(sides) == 1:
                where = _where(base.source, key)
                found.append(f"{where['variant']} {where['mode']} {where['case']} {metric}: only in {sides[0].label}")
    return sorted(found)


def _unmatched(runs: list[_Run]) -> list[str]:
    keys = [set(run.source.cases) for run in runs]
    every, common = set.union(*keys), set.intersection(*keys)
    lines = []
    for key in sorted(every - common):
        source = next(run.source for run in runs if key in run.source.cases)
        where = _where(source, key)
        having = ", ".join(run.label for run, k in zip(runs, keys, strict=True) if key in k)
        lines.append(f"{where['variant']} {where['mode']} {where['case']}: only in {having}")
    return lines


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
        a = _flat(base.records[name].serving.model_dump(mode="json"))
        b = _flat(other.records[name].serving.model_dump(mode="json"))
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
