"""report.md of a cluster run over priced pools: each pool × variant with its throughput, p99, cost per 1M at
its pool's price and feasibility, and the cheapest feasible pool and variant named."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from report_support import frame, row

from workbench.decide.cost import pool_comparison, pool_prices
from workbench.recipe.spec import Bound
from workbench.report.html import render_html
from workbench.report.render import render_markdown
from workbench.report.schema import RunEnvelope

PRICES = {"cpu-small": {"price_per_hour": 0.1}, "cpu-large": {"price_per_hour": 0.4}, "unpriced": {}}


def pooled(variant: str, pool: str, items_per_s: float, p99_ms: float, drop: float) -> dict[str, Any]:
    """An in-process row at batch 8 of ``variant`` measured on ``pool``."""
    return row(f"{variant}@pool={pool}", pool=pool, batch_size=8, case="b8", throughput_items_per_s=items_per_s,
               throughput_rps=items_per_s / 8, latency_ms_p50=p99_ms / 2, latency_ms_p99=p99_ms,
               accuracy_drop=drop)  # fmt: skip


def cluster_run() -> pd.DataFrame:
    """The large pool is 2x faster at 4x the price; int8 misses the accuracy bound on both pools."""
    return frame(
        pooled("fp32", "cpu-small", 1000.0, 4.0, 0.0),
        pooled("fp32", "cpu-large", 2000.0, 2.0, 0.0),
        pooled("int8", "cpu-small", 3000.0, 1.5, 0.05),
        pooled("int8", "cpu-large", 6000.0, 0.8, 0.05),
    )


def envelope(recipe: dict[str, Any]) -> RunEnvelope:
    now = datetime.now(UTC)
    return RunEnvelope(run_id="0001-20260101T000000Z", recipe_name="digits-cpu", spec_hash="0" * 16, created=now,
                       finished=now, status="complete", workbench_version="test", environment={},
                       recipe=recipe)  # fmt: skip


RECIPE = {
    "constraints": {"accuracy_drop": {"max": 0.01}},
    "objective": {"maximize": "throughput_rps", "batch_size": 8},
    "cluster": {"targets": PRICES},
}


def test_prices_are_read_from_the_recorded_recipe() -> None:
    assert pool_prices(RECIPE) == {"cpu-small": 0.1, "cpu-large": 0.4}
    assert pool_prices({}) == {}


def test_every_pool_and_variant_is_compared_feasible_or_not() -> None:
    table = pool_comparison(cluster_run(), {"accuracy_drop": Bound(max=0.01)}, pool_prices(RECIPE), batch_size=8)
    assert list(table["variant"][:2]) == ["fp32@pool=cpu-small", "fp32@pool=cpu-large"]  # feasible, cheapest first
    assert set(table["variant"][2:]) == {"int8@pool=cpu-small", "int8@pool=cpu-large"}
    assert list(table["feasible"]) == [True, True, False, False]
    assert list(table["cheapest"]) == [True, False, False, False]
    assert table.iloc[0]["cost_per_million"] == pytest.approx(0.1 / (1000 * 3600) * 1e6)
    assert "accuracy_drop" in table.iloc[2]["violations"]


def test_report_md_has_the_per_pool_cost_table_and_names_the_cheapest() -> None:
    markdown = render_markdown(envelope(RECIPE), cluster_run(), [])
    section = markdown.split("## Cost per million inferences per pool")[1].split("\n## ")[0]
    assert "(cpu-small 0.1, cpu-large 0.4 USD/hour)" in section
    assert "**Cheapest feasible: fp32@pool=cpu-small on pool cpu-small**" in section
    lines = [line for line in section.splitlines() if line.startswith("| cpu-")]
    assert len(lines) == 4  # every pool × variant, the misses too
    small_fp32 = next(line for line in lines if "fp32@pool=cpu-small" in line)
    assert "| batch 8 | 1,000 | 4.000 | 0.02778 USD | yes | cheapest |" in small_fp32
    int8 = next(line for line in lines if "int8@pool=cpu-large" in line)
    assert "| no: accuracy_drop=0.05 > 0.01 |" in int8


def test_no_pool_meets_the_constraints_says_so() -> None:
    strict = {**RECIPE, "constraints": {"accuracy_drop": {"max": -1.0}}}
    markdown = render_markdown(envelope(strict), cluster_run(), [])
    assert "**No pool and variant meet the constraints.**" in markdown


def test_a_run_without_priced_pools_has_no_pool_section() -> None:
    unpriced = {**RECIPE, "cluster": {"targets": ["cpu-small", "cpu-large"]}}
    assert "per pool" not in render_markdown(envelope(unpriced), cluster_run(), [])
    assert "per pool" not in render_markdown(envelope({}), frame(row("fp32")), [])


def test_report_html_has_the_same_per_pool_table() -> None:
    page = render_html(envelope(RECIPE), cluster_run(), [])
    section = page.split("Cost per million inferences per pool")[1].split("</table>")[0]
    assert "(cpu-small 0.1, cpu-large 0.4 USD/hour)" in section
    assert "<strong>Cheapest feasible: fp32@pool=cpu-small on pool cpu-small</strong>" in section
    assert section.count("<tr") == 5  # the header and every pool × variant
