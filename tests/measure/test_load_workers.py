"""Where Locust workers run is pluggable (a cluster starts them on its nodes): the master listens on the
launcher's host, each worker is sampled where it runs, and saturation is judged per worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from load_support import FAST, MODEL

from workbench.data.base import Dataset
from workbench.measure.load.engine import Target, run_profile
from workbench.measure.load.generator import LocalWorker, LocustRun, LocustWorker, workers_launched_by
from workbench.measure.load.payloads import dataset_batches, write_payloads
from workbench.measure.server import HarnessServer
from workbench.recipe.profiles import load_profile


class NamedNodes:
    """A launcher that starts workers here but says they ran on 'node-0', 'node-1'… (as a cluster's would)."""

    master_host = "127.0.0.1"

    def __init__(self) -> None:
        self.launched: list[int] = []

    def launch(self, run: LocustRun, master_port: int, index: int) -> LocustWorker:
        self.launched.append(index)
        return LocalWorker.spawn(run, (self.master_host, master_port), index, where=f"node-{index}")


@pytest.mark.slow  # a Locust master and two workers: ~10 s
def test_workers_come_from_the_launcher_and_are_judged_one_by_one(
    sleepy_server: HarnessServer, sleepy_dataset: Dataset, tmp_path: Path
) -> None:
    # Any real generator uses more than 0.01% CPU: the threshold stands in for a worker at 90%.
    # min_duration_s: seconds of sampling still ahead once the first request is seen (the records arrive late)
    profile = {**FAST, "kind": "concurrency", "users": [2], "min_duration_s": 3.0, "max_windows": 8}
    spec = load_profile({**profile, "generator_cpu_limit_percent": 0.01})
    payloads = write_payloads(dataset_batches(sleepy_dataset, 1), tmp_path / "payloads", binary=False)
    launcher = NamedNodes()
    with workers_launched_by(launcher):
        target = Target(sleepy_server.url, MODEL, server=sleepy_server)
        result = run_profile(target, spec, payloads, workdir=tmp_path, workers=2)
    (step,) = result.steps
    assert launcher.launched == [0, 1]
    workers = step.extra["generator_workers"]
    assert [w["where"] for w in workers] == ["node-0", "node-1"]
    assert all(w["saturated"] and w["samples"] > 1 for w in workers), workers
    assert "generator_saturated" in step.measurement.flags
    assert step.measurement.iterations > 0
