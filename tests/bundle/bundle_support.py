"""Helpers for the bundle tests: a real server on 127.0.0.1, requests built from real digits, scrapes.

Servers are started and waited for by serving_support alone (``running_server`` in a thread,
``harness_process`` as ``python -m serving_harness serve``): this module only sets the bundle defaults.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
from serving_support import harness_process, running_server, wait_for

from serving_harness.canary import CanarySplit
from serving_harness.config import ServingConfig
from serving_harness.model import ModelConfig

__all__ = ["digits_rows", "harness_process", "infer_body", "running", "sample", "send", "wait_ready"]


@contextlib.contextmanager
def running(
    models: Sequence[ModelConfig],
    settings: ServingConfig | None = None,
    *,
    canary: CanarySplit | None = None,
    version_label: bool = True,
    loop: str = "uvloop",
) -> Iterator[str]:
    """The real app under uvicorn in a thread on a free loopback port, with version labels; yields its URL."""
    with running_server(models, settings, canary=canary, version_label=version_label, loop=loop) as url:
        yield url


def wait_ready(url: str, timeout_s: float = 30.0) -> None:
    """Poll /v2/health/ready until it answers 200."""
    wait_for(url + "/v2/health/ready", timeout_s)


def infer_body(rows: np.ndarray) -> dict[str, object]:
    """An OIP JSON body for digits rows (N, 1, 8, 8)."""
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}


def send(client: httpx.Client, url: str, rows: np.ndarray, model: str = "digits", **headers: str) -> httpx.Response:
    """POST one request to the model's unversioned infer route."""
    return client.post(f"{url}/v2/models/{model}/infer", json=infer_body(rows), headers=headers)


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value in Prometheus text whose labels include ``labels`` (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def digits_rows(path: Path) -> np.ndarray:
    """The bundle's golden inputs (real digits), for requests."""
    with np.load(path, allow_pickle=False) as data:
        return np.asarray(data["input"])
