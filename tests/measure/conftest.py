"""Fixtures for the load engine: a real serving_harness on loopback whose capacity is known.

The model sleeps a fixed SERVICE_MS per batch and is served with one instance, so the server does
about 1000 / SERVICE_MS requests per second: enough to check figures, the SLA search and the flags.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from load_support import FEATURES, MODEL, SERVICE_MS

from serving_harness.config import RuntimeSettings, ServingConfig
from workbench.data.base import Dataset
from workbench.measure.load.fixed_service import write_fixed_service_artifact
from workbench.measure.server import HarnessServer


@pytest.fixture(scope="session")
def sleepy_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixed_service_artifact(tmp_path_factory.mktemp("sleepy"), service_ms=SERVICE_MS, features=FEATURES)


@pytest.fixture(scope="session")
def sleepy_settings() -> ServingConfig:
    return ServingConfig(runtime=RuntimeSettings(name="torch", intra_op_threads=1), instances=1)


@pytest.fixture(scope="session")
def sleepy_dataset() -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset({"x": rng.standard_normal((64, FEATURES)).astype(np.float32)})


@pytest.fixture(scope="module")
def sleepy_server(
    sleepy_artifact: Path, sleepy_settings: ServingConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HarnessServer]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    with HarnessServer(sleepy_artifact, sleepy_settings, name=MODEL, log_path=log) as server:
        yield server


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Every test leaves no Locust process behind (the engine must always stop what it started)."""
    yield
    children = psutil.Process().children(recursive=True)
    locusts = [p for p in children if _is_locust(p)]
    assert not locusts, f"Locust processes left running: {[p.pid for p in locusts]}"


def _is_locust(process: psutil.Process) -> bool:
    try:
        return "locust" in " ".join(process.cmdline()) and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
