"""Distributed load on a real local Ray cluster: the Locust master beside the harness, ``load.workers`` workers
as Ray actors placed by ``cluster.load_placement``, each worker's CPU sampled (and saturation flagged) where it ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from run_support import SHORT_MEASURE

from workbench.errors import MeasurementError
from workbench.recipe.loader import load_recipe
from workbench.sweep.runner import run_recipe

ROOT = Path(__file__).parents[2]
SERVED = [
    *SHORT_MEASURE,
    "measure.batch_sizes=[1]",
    "search.baseline=null",
    "search.pipelines={ort-fp32: [export.onnx]}",
    "load={enabled: true, workers: 2, profile: {kind: concurrency, users: [2], warmup_s: 0.5, window_s: 0.5,"
    " min_windows: 2, max_windows: 3, min_requests: 10}}",
]


def steps_of(run: Any, variant: str) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = run.read_load_details([variant])[variant]["steps"]
    return steps


@pytest.mark.slow
def test_two_workers_spread_run_on_two_nodes(ray_cluster: Any, tmp_path: Path) -> None:
    recipe = load_recipe(ROOT / "recipes" / "digits-cpu.yaml", SERVED)
    run = run_recipe(recipe, reports=tmp_path, cluster=ray_cluster.address)
    (record,) = run.read_variants()
    assert record.status == "ok", record.reason
    (step,) = steps_of(run, "ort-fp32")
    workers = step["generator_workers"]
    assert len(workers) == 2 and len({w["where"] for w in workers}) == 2  # one worker on each node
    harness_node = (record.environment or {})["ray_node"]["id"]
    assert harness_node in {w["where"] for w in workers}  # spread: the harness's node first
    for worker in workers:  # each sampled on its own node, and judged on its own
        assert worker["samples"] > 0 and worker["saturated"] == (
            worker["cpu_percent_mean"] >= 90.0  # the profile's default generator_cpu_limit_percent
        )
    assert step["generator_processes"] == 2
    served = [m for m in record.measurements if m.mode == "served"]
    assert served and served[0].iterations >= 10


def test_other_node_placement_needs_another_node() -> None:
    pytest.importorskip("ray", reason="the [ray] extra is not installed: pip install -e '.[ray]'")
    from workbench.sweep.executors.load_workers import placed_nodes

    assert placed_nodes("spread", "a", ["b", "a", "c"]) == ["a", "b", "c"]
    assert placed_nodes("same-node", "a", ["a", "b"]) == ["a"]
    assert placed_nodes("other-node", "a", ["a", "b"]) == ["b"]
    with pytest.raises(MeasurementError, match="no other node"):
        placed_nodes("other-node", "a", ["a"])
