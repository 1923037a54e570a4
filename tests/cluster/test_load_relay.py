"""Distributed load without a shared file system or a shared clock, on a real local Ray cluster.

Each Locust worker runs in a private folder of its actor's node; a relay brings its records (translated into the
measuring node's clock), done markers and log into the step folder, and forwards the stop file. The actors here play
nodes whose clocks are an hour ahead and an hour behind: records left in the worker's clock would put the first
request an hour away (the step would wait for it) or every window an hour back (no request in any).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving_harness.config import RuntimeSettings, ServingConfig
from workbench.data.base import Dataset
from workbench.errors import MeasurementError
from workbench.measure.load import engine
from workbench.measure.load.engine import Target, run_profile
from workbench.measure.load.fixed_service import write_fixed_service_artifact
from workbench.measure.load.generator import workers_launched_by
from workbench.measure.load.payloads import dataset_batches, write_payloads
from workbench.measure.load.windows import RecordTail, Window, cut_windows
from workbench.measure.load.wire import RECORD_STRUCT, Kind
from workbench.measure.server import HarnessServer
from workbench.recipe.profiles import load_profile

MODEL = "sleepy"
HOUR_NS = 3_600 * 10**9
PROFILE = {
    "kind": "concurrency",
    "users": [4],  # two per worker: a worker's only user blocks on its socket, which delays its flushes (see report)
    "warmup_s": 0.5,
    "window_s": 0.5,
    "min_windows": 3,
    "max_windows": 6,
    "min_requests": 50,
    "tolerance": 0.5,
    "latency_tolerance": 1.0,
}


@pytest.fixture
def driver(ray_cluster: Any) -> Iterator[list[str]]:
    """This process as a driver of the two-node cluster; yields its alive node ids."""
    import ray

    from workbench.sweep.executors.ray import connected

    with connected(ray_cluster.address):
        yield sorted(str(n["NodeID"]) for n in ray.nodes() if n.get("Alive"))  # type: ignore[no-untyped-call]


@pytest.fixture
def sleepy_server(tmp_path: Path) -> Iterator[HarnessServer]:
    """A harness whose model sleeps 5 ms per batch, one instance."""
    artifact = write_fixed_service_artifact(tmp_path / "sleepy", service_ms=5.0, features=4)
    settings = ServingConfig(runtime=RuntimeSettings(name="torch", intra_op_threads=1), instances=1)
    with HarnessServer(artifact, settings, name=MODEL, log_path=tmp_path / "server.log") as server:
        yield server


class CutSpy:
    """Records every window the engine cuts live (the real ``cut_windows`` still cuts them)."""

    def __init__(self) -> None:
        self.windows: list[Window] = []

    def __call__(self, *args: Any, **kwargs: Any) -> list[Window]:
        cut = cut_windows(*args, **kwargs)
        self.windows += cut
        return cut


@pytest.mark.slow
def test_relayed_records_arrive_whole_and_in_this_nodes_clock(
    driver: list[str], sleepy_server: HarnessServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workbench.sweep.executors import load_workers
    from workbench.sweep.executors.load_workers import RayWorkerLauncher

    # A slow relay: its records come later than the engine's flush slack allows for a local process.
    monkeypatch.setattr(load_workers, "RELAY_INTERVAL_S", 0.6)
    rng = np.random.default_rng(0)
    dataset = Dataset({"x": rng.standard_normal((16, 4)).astype(np.float32)})
    payloads = write_payloads(dataset_batches(dataset, 1), tmp_path / "payloads", binary=False)
    spy = CutSpy()
    monkeypatch.setattr(engine, "cut_windows", spy)
    launcher = RayWorkerLauncher("127.0.0.1", driver, clock_skews_ns=(HOUR_NS, -HOUR_NS))
    began_ns = time.monotonic_ns()
    try:
        with workers_launched_by(launcher):
            target = Target(sleepy_server.url, MODEL, server=sleepy_server)
            result = run_profile(target, load_profile(PROFILE), payloads, workdir=tmp_path / "load", workers=2)
        ended_ns = time.monotonic_ns()
        sent = launcher.sent_records()
    finally:
        launcher.close()
    (step,) = result.steps
    folder = Path(step.extra["folder"])
    tail = RecordTail(folder / "records")
    tail.poll()
    records = tail.records()
    assert tail.sources == 2 and len(records) == sent > 0  # every record each worker wrote, and only those
    for name in ("intended", "start", "end"):  # translated into this process's clock
        assert began_ns <= records[name].min() and records[name].max() <= ended_ns
    assert spy.windows and step.measurement.iterations > 0
    for window in spy.windows:  # no window was cut before its records had arrived
        arrived = int(np.count_nonzero((records["end"] >= window.start_ns) & (records["end"] < window.end_ns)))
        assert window.ok + window.errors == arrived > 0, window
    assert len(list((folder / "done").iterdir())) == 4  # the stop file reached both workers' users
    assert [w["where"] for w in step.extra["generator_workers"]] == driver  # spread over both nodes
    assert {p.name for p in folder.glob("locust-worker-*.log")} == {"locust-worker-0.log", "locust-worker-1.log"}


def test_a_stalled_relay_fails_the_step_instead_of_holding_its_windows_forever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ray", reason="the [ray] extra is not installed: pip install -e '.[ray]'")
    from workbench.sweep.executors import load_workers

    folder = load_workers._StepFolder(tmp_path / "records", tmp_path / "done", tmp_path / "stop", tmp_path / "w.log")
    relay = load_workers._Relay(actor=None, folder=folder, index=3, offset_ns=0)  # never started: nothing arrives
    assert relay.delay_ns() >= 0
    monkeypatch.setattr(load_workers, "RELAY_STALL_S", 0.01)
    time.sleep(0.05)
    with pytest.raises(MeasurementError, match="worker 3 stopped arriving"):
        relay.delay_ns()


def test_record_instants_shift_and_nothing_else() -> None:
    pytest.importorskip("ray", reason="the [ray] extra is not installed: pip install -e '.[ray]'")
    from workbench.sweep.executors.load_workers import _shift_records

    data = RECORD_STRUCT.pack(10, 20, 30, int(Kind.TIMEOUT), 1, 0) + RECORD_STRUCT.pack(1, 2, 3, 0, 0, 0)
    shifted = _shift_records(data, -HOUR_NS)
    assert list(RECORD_STRUCT.iter_unpack(shifted)) == [
        (10 - HOUR_NS, 20 - HOUR_NS, 30 - HOUR_NS, int(Kind.TIMEOUT), 1, 0),
        (1 - HOUR_NS, 2 - HOUR_NS, 3 - HOUR_NS, 0, 0, 0),
    ]
    assert _shift_records(shifted, HOUR_NS) == data
