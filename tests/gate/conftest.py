"""Fixtures for the gate's tests: this machine's fingerprint and a fast and a slow variant of one model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gate_support import chain_model

from workbench.host import environment


@pytest.fixture(scope="session")
def fingerprint() -> dict[str, Any]:
    return environment()


@pytest.fixture(scope="session")
def fast_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chain_model(tmp_path_factory.mktemp("models") / "fast.onnx", layers=1)


@pytest.fixture(scope="session")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 40x the fast model's work per call (12 layers of 512 x 512)."""
    return chain_model(tmp_path_factory.mktemp("models") / "slow.onnx", layers=12, hidden=512)
