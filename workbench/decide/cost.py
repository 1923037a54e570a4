"""Cost per million inferences from an instance's price per hour, so "fastest" and "cheapest" can differ.

A variant's cost is taken at its throughput under the constraints (the SLA): its cheapest feasible
served step (its highest throughput), or its in-process row at the objective's batch size. One inference is one item (a batch of 32
rows is 32 inferences). The *fastest* variant is the one with the lowest median latency that still
meets the constraints; the *cheapest* is the one with the lowest cost per million.

Example::

    table = cost_table(frame, {"latency_ms_p99": Bound(max=20)}, price_per_hour=0.34)
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from workbench.decide.select import Mode, Objective, Term, rank
from workbench.errors import UsageError
from workbench.recipe.spec import Bound

__all__ = ["COST_COLUMNS", "cost_per_million", "cost_table", "with_cost"]

SECONDS_PER_HOUR = 3600.0
COST_COLUMNS = (
    "variant",
    "mode",
    "case",
    "batch_size",
    "throughput_items_per_s",
    "latency_ms_p50",
    "cost_per_million",
    "fastest",
    "cheapest",
)


def cost_per_million(price_per_hour: float, items_per_s: float) -> float | None:
    """What a million inferences cost on an instance of ``price_per_hour`` running at ``items_per_s``."""
    if price_per_hour <= 0:
        raise UsageError(f"price per hour must be positive, got {price_per_hour:g}")
    if not items_per_s > 0:  # also catches NaN: no throughput, no cost figure
        return None
    return price_per_hour / (items_per_s * SECONDS_PER_HOUR) * 1e6


def with_cost(frame: pd.DataFrame, price_per_hour: float) -> pd.DataFrame:
    """``frame`` with a ``cost_per_million`` column, so constraints, objectives and the Pareto front can use it."""
    if frame.empty or "throughput_items_per_s" not in frame:
        return frame.assign(cost_per_million=pd.Series(dtype=float))
    costs = [cost_per_million(price_per_hour, float(v)) for v in frame["throughput_items_per_s"].fillna(0.0)]
    return frame.assign(cost_per_million=pd.Series(costs, index=frame.index, dtype=float))


def cost_table(
    frame: pd.DataFrame,
    constraints: Mapping[str, Bound],
    price_per_hour: float,
    *,
    batch_size: int | None = None,
    mode: Mode | None = None,
) -> pd.DataFrame:
    """One row per feasible variant: its cost per million inferences at its throughput under the
    constraints, and which variant is the fastest and which the cheapest; cheapest first."""
    cheapest = Objective((Term("cost_per_million", maximize=False),), batch_size=batch_size)
    ranking = rank(with_cost(frame, price_per_hour), constraints, cheapest, mode=mode)
    rows = ranking[ranking["feasible"]] if not ranking.empty else ranking
    if rows.empty:
        return pd.DataFrame(columns=list(COST_COLUMNS))
    fastest = _fastest(frame, constraints, batch_size, mode)
    rows = rows.assign(fastest=rows["variant"] == fastest, cheapest=rows["rank"] == 1)
    return rows.reindex(columns=list(COST_COLUMNS)).reset_index(drop=True)


def _fastest(
    frame: pd.DataFrame, constraints: Mapping[str, Bound], batch_size: int | None, mode: Mode | None
) -> str | None:
    """The feasible variant with the lowest median latency over any of its feasible figures."""
    quickest = Objective((Term("latency_ms_p50", maximize=False),), batch_size=batch_size)
    ranking = rank(frame, constraints, quickest, mode=mode)
    feasible = ranking[ranking["feasible"]]
    return None if feasible.empty else str(feasible.iloc[0]["variant"])
