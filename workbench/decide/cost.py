"""Cost per million inferences from an instance's price per hour, so "fastest" and "cheapest" can differ.

A variant's cost is taken at its throughput under the constraints (the SLA): its cheapest feasible
served step (its highest throughput), or its in-process row at the objective's batch size. One inference is one item (a batch of 32
rows is 32 inferences). The *fastest* variant is the one with the lowest median latency that still
meets the constraints; the *cheapest* is the one with the lowest cost per million.

Example::

    table = cost_table(frame, {"latency_ms_p99": Bound(max=20)}, price_per_hour=0.34)

A cluster run measures each variant on each hardware pool (its rows carry ``pool``); each pool has its own
price, so ``pool_cost_table`` prices every row at its pool's price and answers "the cheapest pool and
variant that meet the constraints"::

    table = pool_cost_table(frame, constraints, {"cpu-small": 0.10, "cpu-large": 0.40})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from workbench.decide.select import Mode, Objective, Term, rank
from workbench.errors import UsageError
from workbench.recipe.spec import Bound, ClusterSpec, Recipe

__all__ = [
    "COST_COLUMNS",
    "cheapest_on_pools",
    "cost_per_million",
    "cost_table",
    "pool_comparison",
    "pool_cost_table",
    "pool_prices",
    "with_cost",
    "with_pool_cost",
]

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


# ------------------------------------------------------------------------------------------------ hardware pools

POOL_COST_COLUMNS = ("pool", *COST_COLUMNS[:-2], "cheapest")
POOL_COMPARISON_COLUMNS = (
    "pool",
    "variant",
    "mode",
    "case",
    "batch_size",
    "throughput_items_per_s",
    "latency_ms_p50",
    "latency_ms_p99",
    "cost_per_million",
    "feasible",
    "violations",
    "cheapest",
)


def pool_prices(recipe: Recipe | Mapping[str, Any]) -> dict[str, float]:
    """Each pool of ``cluster.targets`` that has a price: name → price per hour. ``recipe`` may also be
    the recipe as a run records it (``run.json``'s mapping), so a report re-rendered later prices the same."""
    cluster = recipe.cluster if isinstance(recipe, Recipe) else _recorded_cluster(recipe)
    targets = cluster.targets if cluster is not None else {}
    return {name: pool.price_per_hour for name, pool in targets.items() if pool.price_per_hour is not None}


def _recorded_cluster(recipe: Mapping[str, Any]) -> ClusterSpec | None:
    found = recipe.get("cluster")
    return ClusterSpec.model_validate(found) if isinstance(found, Mapping) else None


def with_pool_cost(frame: pd.DataFrame, prices: Mapping[str, float]) -> pd.DataFrame:
    """The rows measured on a priced pool, each with ``cost_per_million`` at its own pool's price."""
    if frame.empty or "pool" not in frame:
        return frame.iloc[0:0].assign(cost_per_million=pd.Series(dtype=float))
    priced = frame[frame["pool"].isin(list(prices))]
    if "throughput_items_per_s" not in priced:
        return priced.assign(cost_per_million=pd.Series(float("nan"), index=priced.index, dtype=float))
    pairs = zip(priced["pool"], priced["throughput_items_per_s"].fillna(0.0), strict=True)
    costs = [cost_per_million(prices[str(pool)], float(items)) for pool, items in pairs]
    return priced.assign(cost_per_million=pd.Series(costs, index=priced.index, dtype=float))


def pool_cost_table(
    frame: pd.DataFrame,
    constraints: Mapping[str, Bound],
    prices: Mapping[str, float],
    *,
    batch_size: int | None = None,
    mode: Mode | None = None,
) -> pd.DataFrame:
    """One row per feasible variant × pool, each at its pool's price; cheapest first (``cheapest`` marks it):
    the feasible rows of ``pool_comparison``."""
    table = pool_comparison(frame, constraints, prices, batch_size=batch_size, mode=mode)
    feasible = table[table["feasible"].astype(bool)] if not table.empty else table
    return feasible.reindex(columns=list(POOL_COST_COLUMNS)).reset_index(drop=True)


def pool_comparison(
    frame: pd.DataFrame,
    constraints: Mapping[str, Bound],
    prices: Mapping[str, float],
    *,
    batch_size: int | None = None,
    mode: Mode | None = None,
) -> pd.DataFrame:
    """Every measured variant × priced pool, feasible or not: its throughput, p99 and cost per million at its
    pool's price, whether it meets the constraints (``violations`` says why not), and ``cheapest`` on the one
    the run would pick. Feasible rows cheapest first, then the misses; empty without priced pools."""
    cheapest = Objective((Term("cost_per_million", maximize=False),), batch_size=batch_size)
    ranking = rank(with_pool_cost(frame, prices), constraints, cheapest, mode=mode)
    if ranking.empty:
        return pd.DataFrame(columns=list(POOL_COMPARISON_COLUMNS))
    ranking = ranking.assign(cheapest=(ranking["rank"] == 1).fillna(False).astype(bool))
    return ranking.reindex(columns=list(POOL_COMPARISON_COLUMNS)).reset_index(drop=True)


def cheapest_on_pools(frame: pd.DataFrame, recipe: Recipe) -> dict[str, object] | None:
    """The run summary's answer for a run over priced pools: the cheapest pool and variant that meet the
    recipe's constraints, at the objective's batch size; None without priced pools or a feasible row."""
    prices = pool_prices(recipe)
    if not prices:
        return None
    table = pool_cost_table(frame, recipe.constraints, prices, batch_size=recipe.objective.batch_size)
    if table.empty:
        return None
    best = table.iloc[0]
    return {
        "variant": str(best["variant"]),
        "pool": str(best["pool"]),
        "cost_per_million": round(float(best["cost_per_million"]), 6),
        "price_per_hour": prices[str(best["pool"])],
        "costs": {str(r["variant"]): round(float(r["cost_per_million"]), 6) for _, r in table.iterrows()},
    }
