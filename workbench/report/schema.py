"""Report schema, version 1. Every metric name carries its unit (``latency_ms``, ``throughput_rps``).

Readers accept every older version through explicit migrations in ``migrate``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

RunStatus = Literal["running", "complete", "interrupted", "failed"]
VariantStatus = Literal["ok", "rejected", "failed"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunEnvelope(_Model):
    """``run.json``: who, when, where, with what recipe."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    recipe_name: str
    spec_hash: str
    created: datetime
    finished: datetime | None = None
    status: RunStatus = "running"
    workbench_version: str
    environment: dict[str, Any]
    recipe: dict[str, Any]
    summary: dict[str, Any] = Field(default_factory=dict)


class ArtifactInfo(_Model):
    path: str
    format: str
    size_bytes: int
    content_hash: str


class Quality(_Model):
    """The primary metric against the fp32 source, and how far outputs moved."""

    metric: str
    value: float
    baseline: float
    drop: float
    drop_rel: float
    outputs: dict[str, dict[str, float]] = Field(default_factory=dict)


class Measurement(_Model):
    """One load step: in-process at a batch size, or served under a load profile step."""

    mode: Literal["inprocess", "served"]
    step: str
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


class VariantRecord(_Model):
    """One variant: how it was built and served, whether it passed, what it measured."""

    variant: str
    pipeline: str
    is_baseline: bool
    steps: list[dict[str, Any]]
    serving: dict[str, Any]
    serving_label: str
    runtime: str
    status: VariantStatus
    reason: str | None = None
    error: str | None = None
    artifact: ArtifactInfo | None = None
    lineage: list[dict[str, Any]] = Field(default_factory=list)
    build_figures: dict[str, float] = Field(default_factory=dict)
    build_s: float = 0.0
    quality: Quality | None = None
    measurements: list[Measurement] = Field(default_factory=list)


def migrate(document: dict[str, Any]) -> dict[str, Any]:
    """Bring an older run.json up to SCHEMA_VERSION (one function per step, applied in order)."""
    version = int(document.get("schema_version", 1))
    if version > SCHEMA_VERSION:
        raise ValueError(f"report schema {version} is newer than this workbench reads ({SCHEMA_VERSION}); upgrade")
    return document
