"""A measured server is configured by its ServingConfig, never by the shell that started the sweep."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from serving_harness.config import ServingConfig
from workbench.measure.server import HarnessServer


def test_shell_sh_variables_do_not_reach_a_measured_server(
    sleepy_artifact: Path, sleepy_settings: ServingConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SH_AUTH_TOKEN", "from-the-ci-shell")
    server = HarnessServer(sleepy_artifact, sleepy_settings, name="sleepy", log_path=tmp_path / "server.log")

    with server:
        answer = httpx.get(f"{server.url}/v2/models/sleepy/ready", timeout=10)

    assert answer.status_code == 200  # no token asked for: auth stays off, as the ServingConfig says
