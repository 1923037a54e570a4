"""A real local Ray cluster for the cluster tests: two nodes on 127.0.0.1, one CPU and one measure slot each.

Kept small for 2-core machines (object stores of 200 MB, no dashboard) and shut down however a test ends.
Without the [ray] extra every test here skips, saying what to install.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

POOLS = ("cpu-small", "cpu-large")


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[Any]:
    """Two nodes on 127.0.0.1: the head in pool cpu-small, the worker in pool cpu-large."""
    pytest.importorskip("ray", reason="the [ray] extra is not installed: pip install -e '.[ray]'")
    from workbench.sweep.executors.ray import local_cluster

    with local_cluster(2, POOLS) as cluster:
        yield cluster
