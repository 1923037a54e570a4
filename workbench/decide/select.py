"""Selection: constraints on any metric, objectives (one metric, lexicographic or weighted), the Pareto front.

Which direction is better for each metric comes from the one table in ``workbench.metrics``.

A variant's *figure* is one row of ``results.parquet``:

- served rows (a run measured under load): the variant's best load step that meets every constraint,
  e.g. its highest throughput whose p99 stays within the bound. Steps the load engine did not trust
  (``UNTRUSTED_FLAGS``) are left out.
- in-process rows: the row at the objective's batch size (the largest measured when that one was not).

Example::

    constraints = parse_constraints(["latency_ms.p99<=20", "accuracy_drop<=0.01"])
    best = select(frame, constraints, Objective.parse(["throughput_rps"]))
    print(best.variant, best.reason)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from workbench.errors import NoFeasibleVariant, UsageError
from workbench.metrics import UNTRUSTED_FLAGS, column_name, higher_is_better, is_untrusted
from workbench.recipe.spec import Bound, ObjectiveSpec

__all__ = [
    "Mode",
    "Objective",
    "Selection",
    "Term",
    "pareto_front",
    "parse_constraints",
    "rank",
    "select",
    "select_best",
    "violations",
]

Mode = Literal["served", "inprocess"]

_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
_TERM = re.compile(r"^\s*(?:([-+]?(?:\d+\.?\d*|\.\d+))\s*\*\s*)?(?:(max|min):)?\s*([A-Za-z_][\w.]*)\s*$")


# ------------------------------------------------------------------------------------------------ constraints


def parse_constraints(texts: Iterable[str]) -> dict[str, Bound]:
    """``["latency_ms.p99<=20", "accuracy>=0.97"]`` → ``{"latency_ms_p99": Bound(max=20), ...}``.

    Bounds are inclusive; two texts on one metric (``>=`` and ``<=``) make a range.
    """
    found: dict[str, dict[str, float]] = {}
    for text in texts:
        match = _CONSTRAINT.match(text)
        if match is None:
            raise UsageError(f"constraint {text!r} is not METRIC<=NUMBER or METRIC>=NUMBER (e.g. latency_ms.p99<=20)")
        metric, operator, number = match.groups()
        higher_is_better(metric)  # an unknown metric fails here, listing the known ones
        found.setdefault(column_name(metric), {})["max" if operator == "<=" else "min"] = float(number)
    return {metric: Bound(**sides) for metric, sides in found.items()}


def violations(row: Mapping[str, Any] | pd.Series, constraints: Mapping[str, Bound]) -> list[str]:
    """Human-readable constraint violations of one row (missing figures count as violations)."""
    found: list[str] = []
    for metric, bound in constraints.items():
        value = _value(row, metric)
        if value is None:
            found.append(f"{metric} not measured")
        elif bound.max is not None and value > bound.max:
            found.append(f"{metric}={value:.4g} > {bound.max:g}")
        elif bound.min is not None and value < bound.min:
            found.append(f"{metric}={value:.4g} < {bound.min:g}")
    return found


def _value(row: Mapping[str, Any] | pd.Series, metric: str) -> float | None:
    value = row.get(column_name(metric))
    if value is None or pd.isna(value):
        return None
    return float(value)


def _excess(row: Mapping[str, Any] | pd.Series, metric: str, bound: Bound) -> float:
    """How far ``row`` is outside ``bound``, relative to the bound (0 inside, inf when not measured)."""
    value = _value(row, metric)
    if value is None:
        return math.inf
    over = (value - bound.max) / max(abs(bound.max), 1e-12) if bound.max is not None else 0.0
    under = (bound.min - value) / max(abs(bound.min), 1e-12) if bound.min is not None else 0.0
    return max(over, under, 0.0)


def bound_text(bound: Bound) -> str:
    """``≥ 0.9 and ≤ 20`` for a bound."""
    parts = ([f"≥ {bound.min:g}"] if bound.min is not None else []) + (
        [f"≤ {bound.max:g}"] if bound.max is not None else []
    )
    return " and ".join(parts)


# ------------------------------------------------------------------------------------------------- objectives


@dataclass(frozen=True)
class Term:
    """One metric of an objective, its direction and (for a weighted objective) its weight."""

    metric: str
    maximize: bool
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> Term:
        """``throughput_rps``, ``min:latency_ms.p99`` or ``0.3*accuracy`` (direction from the table by default)."""
        match = _TERM.match(text)
        if match is None:
            raise UsageError(f"objective {text!r} is not [WEIGHT*][max:|min:]METRIC (e.g. 0.7*throughput_rps)")
        weight, direction, metric = match.groups()
        maximize = higher_is_better(metric) if direction is None else direction == "max"
        value = 1.0 if weight is None else float(weight)
        if value <= 0:
            raise UsageError(f"objective {text!r}: a weight must be positive")
        return cls(column_name(metric), maximize, value)

    def describe(self) -> str:
        return f"{'highest' if self.maximize else 'lowest'} {self.metric}"


@dataclass(frozen=True)
class Objective:
    """What 'best' means among the feasible figures.

    ``lexicographic``: the first term decides, later terms break ties. ``weighted``: each term is scaled
    to [0, 1] across the feasible figures (1 = best) and the weighted mean decides; ties go to the
    lexicographic order. Variant names break any tie left, so a ranking is deterministic.
    """

    terms: tuple[Term, ...]
    kind: Literal["lexicographic", "weighted"] = "lexicographic"
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if not self.terms:
            raise UsageError("an objective needs at least one metric")

    @classmethod
    def parse(cls, texts: Sequence[str], *, batch_size: int | None = None) -> Objective:
        """Objective from CLI-style terms: weighted when any term carries a weight, else lexicographic."""
        terms = tuple(Term.parse(t) for t in texts)
        weighted = any("*" in t for t in texts)
        return cls(terms, "weighted" if weighted else "lexicographic", batch_size)

    @classmethod
    def from_spec(cls, spec: ObjectiveSpec) -> Objective:
        """The recipe's ``objective:`` (one metric to maximize or minimize)."""
        metric = spec.maximize or spec.minimize or "throughput_rps"
        higher_is_better(metric)
        return cls((Term(column_name(metric), spec.maximize is not None),), batch_size=spec.batch_size)

    @property
    def metric(self) -> str:
        return self.terms[0].metric

    def describe(self) -> str:
        if len(self.terms) == 1:
            return self.terms[0].describe()
        if self.kind == "weighted":
            return "best weighted score of " + " + ".join(f"{t.weight:g}×{t.describe()}" for t in self.terms)
        return ", then ".join(t.describe() for t in self.terms)


def _ordered(rows: pd.DataFrame, objective: Objective) -> pd.DataFrame:
    """``rows`` best first; a ``score`` column holds the weighted score for weighted objectives."""
    rows = rows.copy()
    keys = [t.metric for t in objective.terms]
    ascending = [not t.maximize for t in objective.terms]
    if objective.kind == "weighted":
        rows["score"] = sum(t.weight * _scaled(rows[t.metric], t.maximize) for t in objective.terms) / sum(
            t.weight for t in objective.terms
        )
        keys, ascending = ["score", *keys], [False, *ascending]
    return rows.sort_values([*keys, "variant"], ascending=[*ascending, True], kind="stable", na_position="last")


def _scaled(values: pd.Series, maximize: bool) -> pd.Series:
    """0 (worst) .. 1 (best) across ``values``; all equal → all 1."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    low, high = numbers.min(), numbers.max()
    if not high > low:
        return pd.Series(1.0, index=values.index)
    scaled = (numbers - low) / (high - low)
    return (scaled if maximize else 1.0 - scaled).fillna(0.0)


# -------------------------------------------------------------------------------------------------- ranking


@dataclass(frozen=True)
class Selection:
    """The chosen variant, the figure it was chosen on, and why.

    ``case`` is the served case it was chosen at (``c8``); None when chosen in-process at ``batch_size``.
    ``ranking`` has one row per measured variant (its figure; ``feasible``, ``violations``, ``rank``).
    """

    variant: str
    metric: str
    value: float
    batch_size: int
    reason: str
    mode: Mode = "inprocess"
    case: str | None = None
    ranking: pd.DataFrame = field(default_factory=pd.DataFrame, compare=False, repr=False)


@dataclass(frozen=True)
class _Pool:
    """The rows figures are drawn from, and what was left out on the way."""

    rows: pd.DataFrame
    mode: Mode
    batch_size: int | None
    notes: tuple[str, ...]


def measured_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of ok variants that carry a measurement."""
    if frame.empty or "status" not in frame or "batch_size" not in frame:
        return frame.iloc[0:0]
    return frame[(frame["status"] == "ok") & frame["batch_size"].notna()]


def _pool(frame: pd.DataFrame, objective: Objective, mode: Mode | None) -> _Pool:
    rows = measured_rows(frame)
    modes = set(rows["mode"].dropna()) if "mode" in rows else {"inprocess"}
    chosen: Mode = mode or ("served" if "served" in modes else "inprocess")
    if "mode" in rows:
        rows = rows[rows["mode"].fillna("inprocess") == chosen]
    if chosen == "served":
        return _served_pool(rows)
    return _inprocess_pool(rows, objective.batch_size)


def _served_pool(rows: pd.DataFrame) -> _Pool:
    flags = rows["flags"].fillna("") if "flags" in rows else pd.Series("", index=rows.index)
    untrusted = flags.map(is_untrusted)
    notes = (f"{int(untrusted.sum())} untrusted step(s) left out ({', '.join(sorted(UNTRUSTED_FLAGS))})",)
    return _Pool(rows[~untrusted], "served", None, notes if untrusted.any() else ())


def _inprocess_pool(rows: pd.DataFrame, batch_size: int | None) -> _Pool:
    measured = sorted({int(b) for b in rows["batch_size"]})
    if not measured:
        return _Pool(rows, "inprocess", batch_size, ())
    batch = batch_size or measured[-1]
    notes: tuple[str, ...] = ()
    if batch not in measured:
        notes = (f"objective batch {batch} was not measured, ranked at {measured[-1]} instead",)
        batch = measured[-1]
    return _Pool(rows[rows["batch_size"] == batch], "inprocess", batch, notes)


def rank(
    frame: pd.DataFrame,
    constraints: Mapping[str, Bound],
    objective: Objective | ObjectiveSpec,
    *,
    mode: Mode | None = None,
) -> pd.DataFrame:
    """One row per measured variant: its figure (best feasible row, or its nearest miss), ``feasible``,
    ``violations`` and ``rank`` (1 = best; none for infeasible ones), best first."""
    goal = objective if isinstance(objective, Objective) else Objective.from_spec(objective)
    return _rank(_pool(frame, goal, mode), constraints, goal)


def _rank(pool: _Pool, constraints: Mapping[str, Bound], objective: Objective) -> pd.DataFrame:
    metrics = [t.metric for t in objective.terms]
    rows = _with_columns(pool.rows, metrics)
    found = [violations(r, constraints) + _unranked(r, metrics) for _, r in rows.iterrows()]
    feasible_mask = pd.Series([not v for v in found], index=rows.index, dtype=bool)
    rows = rows.assign(feasible=feasible_mask, violations=["; ".join(v) for v in found])
    feasible = _ordered(rows[rows["feasible"]], objective).drop_duplicates("variant")
    misses = rows[~rows["feasible"] & ~rows["variant"].isin(feasible["variant"])]
    misses = misses.assign(_miss=[_distance(r, constraints) for _, r in misses.iterrows()])
    misses = misses.sort_values(["_miss", "variant"], kind="stable").drop_duplicates("variant").drop(columns="_miss")
    ranked = pd.concat([feasible.assign(rank=range(1, len(feasible) + 1)), misses.assign(rank=None)])
    return ranked.reset_index(drop=True).astype({"rank": "Int64"})


def _unranked(row: pd.Series, metrics: Sequence[str]) -> list[str]:
    """A row the objective cannot rank (its metric was not measured, e.g. a p99 from too few samples)."""
    return [f"{m} not measured (objective)" for m in metrics if _value(row, m) is None]


def _with_columns(rows: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Objective metrics absent from the frame (an in-process run has no error_rate) read as not measured."""
    missing = {m: float("nan") for m in metrics if m not in rows}
    return rows.assign(**missing) if missing else rows


def _distance(row: pd.Series, constraints: Mapping[str, Bound]) -> float:
    return sum(_excess(row, metric, bound) for metric, bound in constraints.items())


# --------------------------------------------------------------------------------------------------- select


def select(
    frame: pd.DataFrame,
    constraints: Mapping[str, Bound],
    objective: Objective | ObjectiveSpec,
    *,
    mode: Mode | None = None,
) -> Selection:
    """The best feasible variant; raises NoFeasibleVariant naming the binding constraint and the nearest miss."""
    goal = objective if isinstance(objective, Objective) else Objective.from_spec(objective)
    pool = _pool(frame, goal, mode)
    ranking = _rank(pool, constraints, goal)
    feasible = ranking[ranking["feasible"]]
    if feasible.empty:
        raise NoFeasibleVariant(_infeasible_message(frame, pool, constraints, goal))
    best = feasible.iloc[0]
    return Selection(
        variant=str(best["variant"]),
        metric=goal.metric,
        value=float(best[goal.metric]),
        batch_size=int(best["batch_size"]),
        reason=_reason(goal, pool, ranking, constraints),
        mode=pool.mode,
        case=None if pool.mode == "inprocess" else str(best["case"]),
        ranking=ranking,
    )


def select_best(
    frame: pd.DataFrame, constraints: Mapping[str, Bound], objective: Objective | ObjectiveSpec
) -> Selection | None:
    """``select``, or None when no variant is feasible (what a run's summary records)."""
    try:
        return select(frame, constraints, objective)
    except NoFeasibleVariant:
        return None


def _reason(goal: Objective, pool: _Pool, ranking: pd.DataFrame, constraints: Mapping[str, Bound]) -> str:
    where = f"at batch {pool.batch_size}" if pool.mode == "inprocess" else "over served load steps"
    bounds = ", ".join(f"{k} {bound_text(b)}" for k, b in constraints.items()) or "no constraints"
    count = f"{int(ranking['feasible'].sum())} feasible of {len(ranking)}"
    tie = _tie_note(ranking, goal)
    notes = "".join(f"; {n}" for n in (*pool.notes, *tie))
    return f"{goal.describe()} {where} among {count} ({bounds}){notes}"


def _tie_note(ranking: pd.DataFrame, goal: Objective) -> list[str]:
    feasible = ranking[ranking["feasible"]]
    if len(feasible) < 2:
        return []
    key = "score" if goal.kind == "weighted" else goal.metric
    first, second = feasible.iloc[0], feasible.iloc[1]
    if first[key] != second[key]:
        return []
    return [
        f"tied with {second['variant']} on {key}; broken by {'the later terms or ' if len(goal.terms) > 1 else ''}name"
    ]


def _infeasible_message(frame: pd.DataFrame, pool: _Pool, constraints: Mapping[str, Bound], goal: Objective) -> str:
    where = f"in {pool.mode} mode" + (f" at batch {pool.batch_size}" if pool.batch_size else "")
    gated = _gated_note(frame)
    if pool.rows.empty:
        return f"no variant was measured {where}{gated}"
    metrics = [t.metric for t in goal.terms]
    rows = _with_columns(pool.rows, metrics).dropna(subset=metrics)
    if rows.empty:
        return f"no measured variant has {', '.join(metrics)} {where}, which the objective ranks on{gated}"
    rows = rows.sort_values("variant", kind="stable").reset_index(drop=True)
    excess = pd.DataFrame({m: [_excess(r, m, b) for _, r in rows.iterrows()] for m, b in constraints.items()})
    nearest = int(excess.sum(axis=1).to_numpy().argmin())  # the first (by name) of the closest rows
    # a constraint rules a variant out when none of its figures meets it
    ruled_out = {m: int((excess[m] > 0).groupby(rows["variant"]).all().sum()) for m in constraints}
    binding = max(constraints, key=lambda m: (ruled_out[m], excess.at[nearest, m]))
    return (
        f"no variant meets every constraint: {binding} {bound_text(constraints[binding])} rules out "
        f"{ruled_out[binding]} of {rows['variant'].nunique()} measured variant(s); "
        f"nearest miss: {_miss_text(rows.iloc[nearest], constraints)}{gated}"
    )


def _miss_text(row: pd.Series, constraints: Mapping[str, Bound]) -> str:
    at = f"batch {int(row['batch_size'])}" if row.get("mode") != "served" else f"case {row['case']}"
    misses = []
    for metric, bound in constraints.items():
        excess = _excess(row, metric, bound)
        if math.isinf(excess):
            misses.append(f"{metric} not measured")
        elif excess > 0:
            misses.append(f"{metric}={_value(row, metric):.4g} ({excess:.1%} outside {bound_text(bound)})")
    return f"{row['variant']} at {at} with " + ", ".join(misses)


def _gated_note(frame: pd.DataFrame) -> str:
    if "status" not in frame:
        return ""
    others = frame.drop_duplicates("variant")["status"].value_counts()
    parts = [f"{int(others[s])} {s}" for s in ("rejected", "failed") if s in others]
    return f" ({' and '.join(parts)} before measurement)" if parts else ""


# ------------------------------------------------------------------------------------------------ Pareto front


def pareto_front(points: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """The rows of ``points`` no other row dominates on ``metrics`` (directions from the table).

    A row dominates another when it is at least as good on every metric and better on one; equal
    rows do not dominate each other, so ties are all on the front. Rows missing a metric are left out.
    """
    columns = [column_name(m) for m in metrics]
    signs = [1.0 if higher_is_better(m) else -1.0 for m in metrics]
    if points.empty or any(c not in points for c in columns):
        return points.iloc[0:0]
    usable = points.dropna(subset=columns)
    values = usable[columns].to_numpy(dtype=float) * signs
    keep = [not any(_dominates(other, mine) for other in values) for mine in values]
    return usable[keep]


def _dominates(a: Any, b: Any) -> bool:
    return bool((a >= b).all() and (a > b).any())
