"""The load engine on a real serving_harness and real Locust subprocesses, on loopback.

Each test offers a few seconds of load. They assert behaviour (steps measured, flags raised,
processes stopped, reports written), never wall-clock figures, except the SLA search, which must
land in a generous band around the server's known capacity.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from load_support import FAST, MODEL, SERVICE_MS

from serving_harness.config import ServingConfig
from workbench.data.base import Dataset
from workbench.errors import MeasurementError
from workbench.measure.load.engine import ServedResult, Target, measure_served, run_profile
from workbench.measure.load.payloads import dataset_batches, write_payloads
from workbench.measure.server import HarnessServer
from workbench.recipe.profiles import load_profile
from workbench.report.rundir import ReportStore

LATENCY_KEYS = {"p50", "p90", "p95", "p99", "p999", "max", "mean"}


def _run(
    server: HarnessServer, dataset: Dataset, profile: dict[str, Any], workdir: Path, workers: int = 0
) -> ServedResult:
    spec = load_profile({**FAST, **profile})
    payloads = write_payloads(dataset_batches(dataset, spec.batch_size), workdir / "payloads", binary=spec.binary)
    return run_profile(Target(server.url, MODEL, server=server), spec, payloads, workdir=workdir, workers=workers)


def _ok(result: ServedResult) -> None:
    for step in result.steps:
        m = step.measurement
        assert m.mode == "served" and set(m.latency_ms) == LATENCY_KEYS
        assert m.iterations > 0 and m.throughput_rps > 0
        assert step.extra["errors"] == {} and "errors" not in m.flags
        assert m.latency_ms["p50"] is not None and m.latency_ms["p50"] >= SERVICE_MS * 0.9  # the model sleeps


@pytest.mark.slow  # a real run or served load step: `make test` runs it, `make test-fast` skips it
def test_concurrency_steps_measure_a_closed_loop(
    sleepy_server: HarnessServer, sleepy_dataset: Dataset, tmp_path: Path
) -> None:
    result = _run(sleepy_server, sleepy_dataset, {"kind": "concurrency", "users": [1, 3]}, tmp_path)
    _ok(result)
    assert [m.case for m in result.measurements] == ["c1", "c3"]
    assert [m.concurrency for m in result.measurements] == [1, 3]
    one, three = result.steps
    # One instance serves one request at a time: three users queue behind each other.
    assert three.extra["server"]["queue_ms_mean"] > one.extra["server"]["queue_ms_mean"]
    # Every batch held one request; the counts may differ by the request in flight at each scrape.
    batches = one.extra["server"]["batch_size_distribution"]
    assert set(batches) == {"<=1"} and abs(batches["<=1"] - one.extra["server"]["compute_count"]) <= 2
    assert one.extra["generator_processes"] == 1 and one.extra["server_cpu_percent_mean"] is not None


@pytest.mark.parametrize("kind", ["constant", "poisson"])
def test_open_loop_rates_are_offered_and_measured(
    kind: str, sleepy_server: HarnessServer, sleepy_dataset: Dataset, tmp_path: Path
) -> None:
    result = _run(sleepy_server, sleepy_dataset, {"kind": kind, "rates_rps": [60]}, tmp_path)
    _ok(result)
    (step,) = result.steps
    assert step.measurement.case == f"{kind} 60rps" and step.extra["offered_rps"] == 60
    assert 30 < step.measurement.throughput_rps < 90  # goodput follows the offered rate, not the capacity
    assert step.measurement.concurrency is None


@pytest.mark.slow  # a real run or served load step: `make test` runs it, `make test-fast` skips it
def test_a_ramp_is_reported_in_segments_of_rising_rate(
    sleepy_server: HarnessServer, sleepy_dataset: Dataset, tmp_path: Path
) -> None:
    profile = {"kind": "ramp", "start_rps": 20, "end_rps": 100, "duration_s": 3.0, "segments": 3}
    result = _run(sleepy_server, sleepy_dataset, profile, tmp_path)
    _ok(result)
    offered = [s.extra["offered_rps"] for s in result.steps]
    assert len(offered) == 3 and offered == sorted(offered)
    counts = [m.iterations for m in result.measurements]
    assert counts[0] < counts[2]  # more requests fall in the later, faster segments
    assert all("ramp" in m.flags for m in result.measurements)


def test_binary_tensors_at_a_chosen_batch_size(
    sleepy_server: HarnessServer, sleepy_dataset: Dataset, tmp_path: Path
) -> None:
    result = _run(
        sleepy_server, sleepy_dataset, {"kind": "concurrency", "users": [2], "batch_size": 4, "binary": True}, tmp_path
    )
    _ok(result)
    (m,) = result.measurements
    assert m.batch_size == 4 and m.throughput_items_per_s == pytest.approx(4 * m.throughput_rps, rel=1e-3)
    index = json.loads((tmp_path / "payloads" / "payloads.json").read_text())
    assert index["binary"] and "Inference-Header-Content-Length" in index["payloads"][0]["headers"]


@pytest.mark.slow  # a real run or served load step: `make test` runs it, `make test-fast` skips it
def test_a_saturated_generator_is_flagged_and_the_user_told_to_add_workers(
    sleepy_server: HarnessServer, sleepy_dataset: Dataset, tmp_path: Path
) -> None:
    # Any real generator uses more than 0.01% CPU: the threshold stands in for a generator at 90%.
    profile = {"kind": "concurrency", "users": [2], "generator_cpu_limit_percent": 0.01}
    result = _run(sleepy_server, sleepy_dataset, profile, tmp_path)
    (m,) = result.measurements
    assert "generator_saturated" in m.flags
    assert any("add Locust workers" in advice for advice in result.advice)


@pytest.mark.slow  # a Locust master and two workers: ~10 s
def test_distributed_mode_with_two_workers(
    sleepy_server: HarnessServer, sleepy_dataset: Dataset, tmp_path: Path
) -> None:
    result = _run(sleepy_server, sleepy_dataset, {"kind": "poisson", "rates_rps": [60]}, tmp_path, workers=2)
    _ok(result)
    (step,) = result.steps
    assert step.extra["generator_processes"] == 2
    records = list((Path(step.extra["folder"]) / "records").glob("*.bin"))
    assert len(records) == 2  # each worker sent its share of the arrivals
    assert 30 < step.measurement.throughput_rps < 90  # the two shares add up to the offered rate


@pytest.mark.slow
def test_sla_search_converges_near_the_known_capacity(
    sleepy_server: HarnessServer, sleepy_dataset: Dataset, tmp_path: Path
) -> None:
    capacity_rps = 1000 / SERVICE_MS  # one instance, a fixed service time
    profile = {
        "kind": "sla_search", "latency_ms_max": 50.0, "arrival": "constant", "low_rps": 40, "high_rps": 1.5 * capacity_rps,
        "precision": 0.15, "max_probes": 5, "min_requests": 300, "tolerance": 0.5, "latency_tolerance": 1.0,
    }  # fmt: skip
    result = _run(sleepy_server, sleepy_dataset, profile, tmp_path)
    assert result.sla is not None and result.sla.rate_rps is not None
    assert 0.4 * capacity_rps <= result.sla.rate_rps <= 1.1 * capacity_rps
    assert result.sla.probes[0].passed  # the low end met the SLA
    assert any(not p.passed for p in result.sla.probes)  # above capacity the queue grows past the bound
    assert sum("sla_best" in m.flags for m in result.measurements) == 1


@pytest.mark.slow  # a full served profile: ~20 s
def test_measure_served_runs_the_harness_and_keeps_its_log(
    sleepy_artifact: Path, sleepy_settings: ServingConfig, sleepy_dataset: Dataset, tmp_path: Path
) -> None:
    before = {p.pid for p in _harness_children()}
    result = measure_served(
        sleepy_artifact, sleepy_settings, sleepy_dataset, {**FAST, "kind": "concurrency", "users": [2]},
        model_name=MODEL, workdir=tmp_path,
    )  # fmt: skip
    _ok(result)
    assert result.server_log is not None and '"listening"' in result.server_log.read_text()
    assert {p.pid for p in _harness_children()} <= before  # the server was stopped


@pytest.mark.slow  # a real run or served load step: `make test` runs it, `make test-fast` skips it
def test_a_server_killed_mid_run_fails_the_measurement_with_its_log(
    sleepy_artifact: Path, sleepy_settings: ServingConfig, sleepy_dataset: Dataset, tmp_path: Path
) -> None:
    others = {p.pid for p in _harness_children()}  # the module's own server lives on
    killer = threading.Thread(target=_kill_harness_once_load_runs, args=(tmp_path, others), daemon=True)
    killer.start()
    profile = {**FAST, "kind": "concurrency", "users": [2], "max_windows": 20, "min_requests": 100_000}
    with pytest.raises(MeasurementError, match="serving_harness died during load step 'c2'") as caught:
        measure_served(sleepy_artifact, sleepy_settings, sleepy_dataset, profile, model_name=MODEL, workdir=tmp_path)
    killer.join(timeout=30)
    assert "killed by signal 9" in str(caught.value) and "listening" in str(caught.value)  # the log tail


def _harness_children() -> list[psutil.Process]:
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if "serving_harness" in " ".join(process.cmdline()) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


def _kill_harness_once_load_runs(workdir: Path, spare: set[int]) -> None:
    """SIGKILL the harness measure_served started a second into the load (not the ``spare`` ones)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(workdir.glob("00-c2/records/*.bin")):
        time.sleep(0.05)
    time.sleep(1.0)
    for process in _harness_children():
        if process.pid not in spare:
            os.kill(process.pid, signal.SIGKILL)


@pytest.mark.slow  # a CLI run against a live endpoint: ~17 s
def test_workbench_load_measures_a_running_endpoint_and_writes_a_report(
    sleepy_server: HarnessServer, tmp_path: Path
) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(json.dumps({**FAST, "kind": "concurrency", "users": [2]}))
    reports = tmp_path / "reports"
    command = [
        sys.executable, "-m", "workbench.cli", "load", sleepy_server.url, "--model", MODEL,
        "--profile", str(profile), "--batch-size", "2", "--binary", "--reports", str(reports),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    (run,) = ReportStore(reports).runs()
    envelope = run.read_envelope()
    assert envelope.status == "complete" and envelope.recipe["load"]["url"] == sleepy_server.url
    (record,) = run.read_variants()
    assert record.variant == f"{MODEL}@{sleepy_server.url.removeprefix('http://')}"
    (m,) = record.measurements
    assert m.mode == "served" and m.batch_size == 2 and m.latency_ms["p50"] is not None
    details = json.loads((run.path / "load" / f"{run.variant_path(record.variant).stem}.json").read_text())
    server = details["steps"][0]["server"]  # the server's own account of the same requests
    assert server["server_latency_count"] > 0 and server["compute_ms_mean"] >= SERVICE_MS * 0.9
    assert (run.path / "results.parquet").exists() and (run.path / "report.md").exists()
