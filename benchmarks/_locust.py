"""Drive an OIP v2 endpoint (REST or gRPC) with the workbench's own Locust load engine: one closed-loop step.

What the serving benchmarks use where ``wrk`` cannot go: gRPC (wrk speaks HTTP/1.1 only) and machines
without wrk (the GPU machine). The engine runs Locust in subprocesses (standalone, or a master and
``workers`` workers) that inherit this process's CPU affinity, computes the figures from its own
per-request records, and flags a step whose generator was saturated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logging.getLogger("workbench").setLevel(logging.ERROR)  # the engine's saturation advice is printed by the caller


@dataclass(frozen=True)
class LocustResult:
    requests_per_s: float
    p99_ms: float
    saturated: bool  # a generator process at its CPU limit: the figure is the generator's, not the server's
    server: dict[str, float] = field(default_factory=dict)  # the harness's own breakdown from /metrics


def fixed_windows_profile(
    users: int, *, warmup_s: float, windows: int, window_s: float = 1.0, binary: bool = False
) -> dict[str, Any]:
    """A closed-loop step of exactly ``windows`` windows: tolerances this wide never drop a window to "settle",
    so every window counts and every step is as long (what a benchmark that compares steps needs)."""
    return {
        "kind": "concurrency", "users": [users], "warmup_s": warmup_s, "window_s": window_s,
        "min_windows": windows, "max_windows": windows, "min_requests": 1, "tolerance": 10.0,
        "latency_tolerance": 10.0, "binary": binary,
    }  # fmt: skip


def run_locust(
    url: str,
    model: str,
    inputs: dict[str, np.ndarray],
    *,
    users: int,
    duration_s: int,
    warmup_s: float,
    workdir: Path,
    workers: int = 0,
    grpc_target: str | None = None,
    binary: bool = False,
) -> LocustResult:
    """``users`` closed-loop Locust users sending ``inputs`` to ``url`` (over gRPC to ``grpc_target`` if given)."""
    from workbench.measure.load.engine import Target, run_profile
    from workbench.measure.load.payloads import write_payloads
    from workbench.recipe.profiles import load_profile

    profile = load_profile(fixed_windows_profile(users, warmup_s=warmup_s, windows=max(2, duration_s), binary=binary))
    payloads = write_payloads([inputs], workdir / "payloads", binary=binary)
    target = Target(url=url, model=model, grpc_target=grpc_target)
    (step,) = run_profile(target, profile, payloads, workdir=workdir, workers=workers).steps
    m = step.measurement
    if "errors" in m.flags:
        raise RuntimeError(f"{url} ({'gRPC' if grpc_target else 'REST'}): failed requests {step.extra['errors']}")
    return LocustResult(
        requests_per_s=m.throughput_rps,
        p99_ms=m.latency_ms.get("p99") or float("nan"),
        saturated="generator_saturated" in m.flags,
        server=dict(m.server),
    )
