"""Where a measured server listens: 127.0.0.1 by default; the address named by WORKBENCH_HARNESS_HOST when a
cluster measurement's Locust workers run on other nodes (they must reach it). Loopback names only here."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from serving_harness.config import ServingConfig
from workbench.measure.server import HOST_ENV, HarnessServer, harness_host


def test_servers_listen_on_loopback_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOST_ENV, raising=False)
    assert harness_host() == "127.0.0.1"
    monkeypatch.setenv(HOST_ENV, "localhost")
    assert harness_host() == "localhost"


def test_a_server_told_another_address_listens_and_answers_there(
    sleepy_artifact: Path, sleepy_settings: ServingConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOST_ENV, "localhost")
    with HarnessServer(sleepy_artifact, sleepy_settings, name="sleepy", log_path=tmp_path / "log") as server:
        assert server.url.startswith("http://localhost:")
        assert "--host" in server.command() and "localhost" in server.command()
        assert httpx.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200


def test_the_cluster_sets_the_address_only_within_a_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray", reason="the [ray] extra is not installed: pip install -e '.[ray]'")
    from workbench.sweep.executors.load_workers import _harness_listening_on

    monkeypatch.setenv(HOST_ENV, "before")
    with _harness_listening_on("127.0.0.2"):
        assert harness_host() == "127.0.0.2"
    assert harness_host() == "before"
    with _harness_listening_on(None):  # every worker beside the harness: loopback is enough
        assert harness_host() == "before"
    monkeypatch.delenv(HOST_ENV)
    with _harness_listening_on("127.0.0.2"):
        pass
    assert harness_host() == "127.0.0.1"
