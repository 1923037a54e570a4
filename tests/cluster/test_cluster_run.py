"""A sweep on a real local Ray cluster: the same report as a local run, pools priced and compared, a lost
node survived, a killed driver resumed, the nodes listed by doctor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from workbench.recipe.loader import load_recipe
from workbench.recipe.spec import Recipe
from workbench.report.rundir import ReportStore, RunDir
from workbench.sweep.runner import run_recipe

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]
FAST = [
    "measure.trials=2",
    "measure.trial_duration_s=0.05",
    "measure.warmup_iters=2",
    "measure.min_trial_iters=5",
    "measure.batch_sizes=[1, 8]",
    "load.enabled=false",
    "search.baseline=torch-eager",
    "search.pipelines={torch-eager: [], ort-fp32: [export.onnx]}",
]


def two_variant_recipe(*extra: str) -> Recipe:
    """recipes/digits-cpu.yaml cut to two quick variants (torch eager and ONNX fp32), in-process only."""
    return load_recipe(ROOT / "recipes" / "digits-cpu.yaml", [*FAST, *extra])


PRICES = "cluster.targets={cpu-small: {price_per_hour: 0.10}, cpu-large: {price_per_hour: 0.40}}"


def statuses(run: RunDir) -> dict[str, str]:
    return {record.variant: record.status for record in run.read_variants()}


def test_cluster_run_reports_what_a_local_run_does(ray_cluster: Any, tmp_path: Path) -> None:
    local = run_recipe(two_variant_recipe(), reports=tmp_path / "local")
    remote = run_recipe(two_variant_recipe(), reports=tmp_path / "cluster", cluster=ray_cluster.address)
    assert remote.read_envelope().status == "complete"
    assert statuses(remote) == statuses(local) == {"torch-eager": "ok", "ort-fp32": "ok"}
    frame = remote.read_results()
    assert set(frame["variant"]) == {"torch-eager", "ort-fp32"} and frame["hardware"].notna().all()
    records = {r.variant: r for r in remote.read_variants()}
    assert records["ort-fp32"].environment is not None and records["ort-fp32"].pool is None
    artifact = records["ort-fp32"].artifact
    assert artifact is not None and (Path(os.environ["WORKBENCH_CACHE_DIR"]) / artifact.path).exists()


def test_each_variant_on_each_pool_and_the_cheapest_pool_selected(ray_cluster: Any, tmp_path: Path) -> None:
    run = run_recipe(two_variant_recipe(PRICES), reports=tmp_path, cluster=ray_cluster.address)
    frame = run.read_results()
    measured = frame.dropna(subset=["batch_size"])
    assert set(zip(measured["variant"], measured["pool"], strict=True)) == {
        (f"{variant}@pool={pool}", pool)
        for variant in ("torch-eager", "ort-fp32")
        for pool in ("cpu-small", "cpu-large")
    }
    cheapest = run.read_envelope().summary["cheapest"]
    assert cheapest["pool"] == "cpu-small"  # the same node hardware at a quarter of the price
    costs = cheapest["costs"]
    assert cheapest["cost_per_million"] == min(costs.values())
    assert costs[cheapest["variant"]] < costs[cheapest["variant"].replace("cpu-small", "cpu-large")]


def test_a_pool_no_node_offers_is_bad_input(ray_cluster: Any, tmp_path: Path) -> None:
    from workbench.errors import UsageError

    with pytest.raises(UsageError, match="no node offers pool gpu-big"):
        run_recipe(two_variant_recipe("cluster.targets=[gpu-big]"), reports=tmp_path, cluster=ray_cluster.address)


def test_a_node_lost_mid_sweep_is_retried_elsewhere(ray_cluster: Any, tmp_path: Path) -> None:
    extra = ray_cluster.add_node(num_cpus=1, object_store_memory=200 * 1024**2, node_ip_address="127.0.0.1",
                                 resources={"measure": 1, "pool:cpu-small": 1})  # fmt: skip
    ray_cluster.wait_for_nodes()
    slow = ["measure.trials=3", "measure.trial_duration_s=0.5"]  # seconds of measuring to be killed in
    killer = threading.Timer(4.0, lambda: ray_cluster.remove_node(extra, allow_graceful=False))
    hook_started: list[str] = []

    def hook(event: str, payload: dict[str, Any]) -> None:
        if event == "variant" and not hook_started:
            hook_started.append(payload["id"])
            killer.start()

    try:
        run = run_recipe(two_variant_recipe(*slow), reports=tmp_path, cluster=ray_cluster.address, hook=hook)
    finally:
        killer.cancel()
        killer.join()
    assert not any(node is extra for node in ray_cluster.worker_nodes)
    assert run.read_envelope().status == "complete"
    assert statuses(run) == {"torch-eager": "ok", "ort-fp32": "ok"}


def test_a_killed_driver_resumes_without_redoing_finished_variants(ray_cluster: Any, tmp_path: Path) -> None:
    recipe_args = [f"--set={s}" for s in ("measure.trials=3", "measure.trial_duration_s=0.4")]
    command = [sys.executable, "-m", "workbench.cli", "run", str(ROOT / "recipes" / "digits-cpu.yaml"),
               *[f"--set={s}" for s in FAST], *recipe_args, "--cluster", ray_cluster.address,
               "--reports", str(tmp_path)]  # fmt: skip
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first = _first_record(tmp_path, driver)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(timeout=30)
    before = {p.name: p.stat().st_mtime_ns for p in first.parent.glob("*.json")}
    recipe = two_variant_recipe("measure.trials=3", "measure.trial_duration_s=0.4")
    resumed = run_recipe(recipe, reports=tmp_path, resume=True, cluster=ray_cluster.address)
    assert resumed.path == first.parents[1] and resumed.read_envelope().status == "complete"
    assert statuses(resumed) == {"torch-eager": "ok", "ort-fp32": "ok"}
    after = {p.name: p.stat().st_mtime_ns for p in first.parent.glob("*.json")}
    assert all(after[name] == mtime for name, mtime in before.items())  # finished variants were not redone


def _first_record(reports: Path, driver: subprocess.Popen[bytes]) -> Path:
    """The first variant record the driver writes (bounded wait)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        found = sorted(reports.glob("*/*/variants/*.json"))
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"the driver wrote no variant record (exit {driver.poll()})")


def test_doctor_lists_the_nodes_and_their_pools(ray_cluster: Any) -> None:
    from workbench.doctor import cluster_checks

    checks = cluster_checks(ray_cluster.address)
    assert checks[0].ok and "2 node(s)" in checks[0].detail
    nodes = [c for c in checks[1:] if c.name.startswith("node 127.0.0.1")]
    assert sorted(c.detail.split("pools: ")[1] for c in nodes) == ["cpu-large", "cpu-small"]


def test_cli_local_cluster_with_targets(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the [ray] extra is not installed: pip install -e '.[ray]'")
    command = [sys.executable, "-m", "workbench.cli", "run", str(ROOT / "recipes" / "digits-cpu.yaml"),
               *[f"--set={s}" for s in FAST], f"--set={PRICES}", "--cluster", "local:2",
               "--targets", "cpu-large,cpu-small", "--reports", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=280, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_path,) = tmp_path.glob("*/*/run.json")
    run = ReportStore(tmp_path).find(str(run_path.parent))
    frame = pd.read_parquet(run.results_path)
    assert set(frame["pool"]) == {"cpu-small", "cpu-large"}
    assert run.read_envelope().summary["cheapest"]["pool"] == "cpu-small"
