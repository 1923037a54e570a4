"""Cost per million inferences: the arithmetic, and fastest vs cheapest told apart under an SLA."""

from __future__ import annotations

import pandas as pd
import pytest
from report_support import frame, served

from workbench.decide.cost import cost_per_million, cost_table, with_cost
from workbench.decide.select import Objective, parse_constraints, select
from workbench.errors import UsageError


def test_cost_per_million_from_price_and_throughput() -> None:
    # 1000 items/s for an hour is 3.6M inferences for 3.60: 1.00 per million
    assert cost_per_million(3.6, 1000.0) == pytest.approx(1.0)
    assert cost_per_million(3.6, 0.0) is None
    with pytest.raises(UsageError, match="price per hour must be positive"):
        cost_per_million(0.0, 10.0)


def sla_run() -> pd.DataFrame:
    """'snappy' answers fastest at low load; 'batched' costs less because it serves more within the SLA."""
    return frame(
        served("snappy", 1, 800, 2.0, latency_ms_p50=0.6),
        served("snappy", 8, 1200, 25.0, latency_ms_p50=5.0),
        served("batched", 1, 300, 6.0, latency_ms_p50=3.0),
        served("batched", 8, 2400, 18.0, latency_ms_p50=4.0, throughput_items_per_s=2400.0),
    )


def test_fastest_and_cheapest_differ_under_the_sla() -> None:
    table = cost_table(sla_run(), parse_constraints(["latency_ms.p99<=20"]), price_per_hour=1.2)
    by_variant = table.set_index("variant")
    assert list(table["variant"]) == ["batched", "snappy"]  # cheapest first
    assert by_variant.loc["batched", "cheapest"] and not by_variant.loc["batched", "fastest"]
    assert by_variant.loc["snappy", "fastest"] and not by_variant.loc["snappy", "cheapest"]
    assert by_variant.loc["batched", "case"] == "c8"  # its throughput within the p99 bound
    assert by_variant.loc["snappy", "case"] == "c1"  # its c8 step broke the bound
    assert by_variant.loc["batched", "cost_per_million"] == pytest.approx(1.2 / (2400 * 3600) * 1e6)


def test_cost_is_a_metric_selection_can_use() -> None:
    priced = with_cost(sla_run(), 1.2)
    best = select(
        priced, parse_constraints(["latency_ms.p99<=20", "cost_per_million<=0.3"]), Objective.parse(["latency_ms_p50"])
    )
    assert (best.variant, best.case) == ("batched", "c8")


def test_no_feasible_variant_gives_an_empty_cost_table() -> None:
    table = cost_table(sla_run(), parse_constraints(["latency_ms.p99<=1"]), price_per_hour=1.0)
    assert table.empty and "cost_per_million" in table.columns
