"""Selection: constraints on any metric, an objective, the best feasible variant.

One table says which direction is better for each metric (after model_analyzer's metric records);
``select`` and the CI gate both read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from workbench.errors import UsageError
from workbench.spec import Bound, ObjectiveSpec

HIGHER_IS_BETTER: dict[str, bool] = {
    "throughput_rps": True,
    "throughput_items_per_s": True,
    "accuracy": True,
    "accuracy_drop": False,
    "accuracy_drop_rel": False,
    "artifact_mb": False,
    "build_s": False,
    "max_abs_diff": False,
}
for _k in ("p50", "p90", "p95", "p99", "p999", "max", "mean"):
    HIGHER_IS_BETTER[f"latency_ms_{_k}"] = False

QUALITY_METRICS = frozenset({"accuracy", "accuracy_drop", "accuracy_drop_rel", "max_abs_diff"})


def column_name(metric: str) -> str:
    """``latency_ms.p99`` and ``latency_ms_p99`` name the same column."""
    return metric.replace(".", "_")


def higher_is_better(metric: str) -> bool:
    try:
        return HIGHER_IS_BETTER[column_name(metric)]
    except KeyError:
        raise UsageError(f"unknown metric {metric!r}; known: {', '.join(sorted(HIGHER_IS_BETTER))}") from None


def violations(row: Mapping[str, Any] | pd.Series, constraints: dict[str, Bound]) -> list[str]:
    """Human-readable constraint violations of one row (missing figures count as violations)."""
    found: list[str] = []
    for metric, bound in constraints.items():
        value = row.get(column_name(metric))
        if value is None or pd.isna(value):
            found.append(f"{metric} not measured")
        elif bound.max is not None and value > bound.max:
            found.append(f"{metric}={value:.4g} > {bound.max:g}")
        elif bound.min is not None and value < bound.min:
            found.append(f"{metric}={value:.4g} < {bound.min:g}")
    return found


@dataclass(frozen=True)
class Selection:
    variant: str
    metric: str
    value: float
    batch_size: int
    reason: str


def select_best(frame: pd.DataFrame, constraints: dict[str, Bound], objective: ObjectiveSpec) -> Selection | None:
    """The best ok row under the constraints at the objective's batch size, or None if none is feasible."""
    metric = column_name(objective.maximize or objective.minimize or "")
    rows = frame[(frame["status"] == "ok") & frame["batch_size"].notna()]
    if rows.empty:
        return None
    measured = {int(b) for b in rows["batch_size"]}
    note = ""
    batch = objective.batch_size or max(measured)
    if batch not in measured:
        note = f"; objective batch {batch} was not measured, ranked at {max(measured)} instead"
        batch = max(measured)
    rows = rows[rows["batch_size"] == batch]
    feasible = rows[[not violations(r, constraints) for _, r in rows.iterrows()]]
    if feasible.empty:
        return None
    ordered = feasible.sort_values(metric, ascending=objective.maximize is None, kind="stable")
    best = ordered.iloc[0]
    word = "highest" if objective.maximize else "lowest"
    bounds = ", ".join(f"{k} {_bound_text(b)}" for k, b in constraints.items()) or "no constraints"
    reason = f"{word} {metric} at batch {batch} among {len(feasible)} feasible of {len(rows)} ({bounds}){note}"
    return Selection(str(best["variant"]), metric, float(best[metric]), batch, reason)


def _bound_text(bound: Bound) -> str:
    parts = ([f"≥ {bound.min:g}"] if bound.min is not None else []) + (
        [f"≤ {bound.max:g}"] if bound.max is not None else []
    )
    return " and ".join(parts)
