"""A sweep on a real local Ray cluster: the same report as a local run, pools priced and compared, a lost
node survived, a killed driver resumed, the nodes listed by doctor."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
from run_support import SHORT_MEASURE

from workbench.recipe.loader import load_recipe
from workbench.recipe.spec import Recipe
from workbench.report.rundir import ReportStore, RunDir
from workbench.sweep.runner import run_recipe

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]
FAST = [
    *SHORT_MEASURE,
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


SPARE = {"num_cpus": 1, "object_store_memory": 200 * 1024**2, "node_ip_address": "127.0.0.1",
         "resources": {"measure": 1, "pool:spare": 1}}  # fmt: skip


def test_a_node_lost_mid_measurement_is_retried_elsewhere(ray_cluster: Any, tmp_path: Path) -> None:
    doomed = ray_cluster.add_node(**SPARE)  # the only node of pool "spare": every measurement starts there
    ray_cluster.wait_for_nodes()
    replacements: list[Any] = []

    def kill_while_measuring() -> None:
        if _wait_for_task(doomed, "ray::_measure_task", timeout_s=240):
            ray_cluster.remove_node(doomed, allow_graceful=False)
            replacements.append(_add_node_off_main_thread(ray_cluster))  # where the retry can go

    killer = threading.Thread(target=kill_while_measuring, daemon=True)
    killer.start()
    slow = ["measure.trials=3", "measure.trial_duration_s=0.5", "cluster.targets=[spare]"]
    try:
        run = run_recipe(two_variant_recipe(*slow), reports=tmp_path, cluster=ray_cluster.address)
    finally:
        killer.join(timeout=300)
        for node in replacements:
            ray_cluster.remove_node(node)
    assert replacements, "no measurement started on the doomed node"
    assert run.read_envelope().status == "complete"
    records = {r.variant: r for r in run.read_variants()}
    assert {v: r.status for v, r in records.items()} == {"torch-eager@pool=spare": "ok", "ort-fp32@pool=spare": "ok"}
    retried = [r for r in records.values() if r.attempts > 1]
    assert retried, {v: r.attempts for v, r in records.items()}  # the measurement cut short ran again
    measured_on = {(r.environment or {})["ray_node"]["id"] for r in records.values()}
    assert measured_on == {replacements[0].node_id}  # nothing finished on the killed node
    assert set(run.read_results().dropna(subset=["batch_size"])["attempts"]) >= {r.attempts for r in retried}


def _add_node_off_main_thread(cluster: Any) -> Any:
    """``cluster.add_node(**SPARE)`` from a thread: with ``shutdown_at_exit`` Ray installs a SIGTERM handler,
    which only the main thread may; the test removes the node itself, so it needs no exit hook."""
    cluster._shutdown_at_exit = False
    try:
        return cluster.add_node(**SPARE)
    finally:
        cluster._shutdown_at_exit = True


def _wait_for_task(node: Any, title: str, *, timeout_s: float) -> bool:
    """Whether a worker process of ``node`` runs a task titled ``title`` (Ray names its workers' processes
    after the task they run) within ``timeout_s``."""
    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child in raylet.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if child.cmdline()[:1] == [title]:
                    return True
        time.sleep(0.1)
    return False


def test_a_killed_driver_resumes_without_redoing_finished_variants(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the [ray] extra is not installed: pip install -e '.[ray]'")
    recipe_args = [f"--set={s}" for s in (*FAST, "measure.trials=3", "measure.trial_duration_s=0.4")]
    command = [sys.executable, "-m", "workbench.cli", "run", str(ROOT / "recipes" / "digits-cpu.yaml"), *recipe_args,
               "--cluster", "local:2", "--reports", str(tmp_path)]  # fmt: skip
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first = _first_record(tmp_path, driver)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(timeout=30)
    finished = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in first.parent.glob("*.json")}
    assert len(finished) == 1, sorted(finished)  # killed with a variant still to finish
    run = RunDir(first.parents[1])
    assert run.read_envelope().status == "running"  # nobody could say otherwise: kill -9
    done = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=280, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert run.read_envelope().status == "complete"
    assert statuses(run) == {"torch-eager": "ok", "ort-fp32": "ok"}
    for name, (mtime_ns, content) in finished.items():  # the finished variant was neither rebuilt nor remeasured
        record = first.parent / name
        assert record.stat().st_mtime_ns == mtime_ns and record.read_bytes() == content


def _first_record(reports: Path, driver: subprocess.Popen[bytes]) -> Path:
    """The first variant record the driver writes (bounded wait)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        found = sorted(reports.glob("*/*/variants/*.json"))
        if found:
            return found[0]
        time.sleep(0.05)
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
