"""Hardware pools without a cluster: variant ids per pool, and the cheapest feasible pool and variant."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from workbench.decide.cost import pool_cost_table
from workbench.errors import UsageError
from workbench.recipe.loader import load_recipe, spec_hash
from workbench.recipe.spec import Bound
from workbench.sweep.executors import on_pools, pool_of
from workbench.sweep.space import expand

RECIPE = Path(__file__).parents[2] / "recipes" / "digits-cpu.yaml"
TWO = "search.pipelines={torch-eager: [], ort-fp32: [export.onnx]}"


def test_each_variant_once_per_pool_baseline_first() -> None:
    recipe = load_recipe(RECIPE, [TWO, "cluster.targets=[small, large]"])
    ids = [v.id for v in on_pools(expand(recipe), recipe)]
    assert ids == ["torch-eager@pool=small", "torch-eager@pool=large", "ort-fp32@pool=small", "ort-fp32@pool=large"]
    assert [pool_of(i) for i in ids] == ["small", "large", "small", "large"]
    assert pool_of("ort-fp32@intra_op_threads=2") is None


def test_pools_need_a_grid_search() -> None:
    recipe = load_recipe(RECIPE, [TWO, "cluster.targets=[small]", "search.strategy=optuna"])
    with pytest.raises(UsageError, match="strategy: grid"):
        on_pools(expand(recipe), recipe)


def test_a_recipe_without_a_cluster_section_hashes_as_before() -> None:
    recipe = load_recipe(RECIPE, [TWO])
    assert "cluster" not in recipe.model_dump(mode="json")
    assert spec_hash(recipe) != spec_hash(load_recipe(RECIPE, [TWO, "cluster.targets=[small]"]))


def test_the_cheapest_pool_that_meets_the_constraints_wins() -> None:
    rows = [  # the large pool is 2x faster at 4x the price; the small pool's int8 misses the accuracy bound
        ("fp32@pool=small", "small", 1000.0, 0.0),
        ("fp32@pool=large", "large", 2000.0, 0.0),
        ("int8@pool=small", "small", 3000.0, 0.05),
        ("int8@pool=large", "large", 6000.0, 0.05),
    ]
    frame = pd.DataFrame(
        [
            {"variant": v, "pool": p, "status": "ok", "mode": "inprocess", "batch_size": 8, "case": "b8",
             "throughput_items_per_s": t, "accuracy_drop": d, "latency_ms_p50": 1.0}
            for v, p, t, d in rows
        ]
    )  # fmt: skip
    table = pool_cost_table(frame, {"accuracy_drop": Bound(max=0.01)}, {"small": 0.1, "large": 0.4})
    assert list(table["variant"]) == ["fp32@pool=small", "fp32@pool=large"]
    assert table.iloc[0]["cheapest"] and table.iloc[0]["pool"] == "small"
    assert table.iloc[1]["cost_per_million"] == pytest.approx(2 * table.iloc[0]["cost_per_million"])
