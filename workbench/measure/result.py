"""What one measurement produced: the value ``measure`` hands up and the report stores (``VariantRecord``).

It lives here, beside what makes it, so that measurement never imports the report layer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Measurement"]


class Measurement(BaseModel):
    """One measured case: in-process at a batch size (``b32``), or served at one load step of a profile
    (``c4``, ``poisson 100rps``). ``case`` names what was measured; the gate compares runs case by case."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["inprocess", "served"]
    case: str
    batch_size: int
    concurrency: int | None = None
    iterations: int
    trials: int
    latency_ms: dict[str, float | None]
    latency_ms_p50_std: float | None = None
    throughput_rps: float
    throughput_rps_std: float | None = None
    throughput_rps_ci: tuple[float, float] | None = None
    throughput_items_per_s: float
    flags: list[str] = Field(default_factory=list)
    # Served steps only: the open-loop rate asked for, failed share, the server's own breakdown from
    # /metrics (queue_ms_mean, compute_ms_mean, server_latency_ms_mean, batch_size_mean) and CPU/memory
    # (server_cpu_percent_mean, server_rss_mb_max, generator_cpu_percent_max). Per-window detail is in load/.
    offered_rps: float | None = None
    error_rate: float | None = None
    server: dict[str, float] = Field(default_factory=dict)
    resources: dict[str, float] = Field(default_factory=dict)
    # One value per trial (``throughput_rps``, ``latency_ms_p50``, ``latency_ms_p99``, ...): what the CI
    # gate's statistics need. A percentile a trial was too short for is left out rather than guessed.
    samples: dict[str, list[float]] = Field(default_factory=dict)
