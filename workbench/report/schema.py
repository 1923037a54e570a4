"""Report schema, version 1. Every metric name carries its unit (``latency_ms``, ``throughput_rps``).

Readers accept every older version through explicit migrations in ``migrate``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workbench.errors import UsageError
from workbench.measure.result import Measurement

__all__ = [
    "SCHEMA_VERSION",
    "ArtifactInfo",
    "Measurement",
    "Quality",
    "RunEnvelope",
    "VariantRecord",
]

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


Migration = Callable[[dict[str, Any]], dict[str, Any]]
DocumentKind = Literal["run", "variant"]

# MIGRATIONS[kind][n] turns a version-n document into a version n+1 one. Bumping SCHEMA_VERSION means
# adding one step per kind here (and a golden report of the old version under tests/report/golden/);
# a step is never edited once released, so every report ever written stays readable.
MIGRATIONS: dict[DocumentKind, dict[int, Migration]] = {"run": {}, "variant": {}}


def migrate(document: dict[str, Any], *, kind: DocumentKind = "run", version: int | None = None) -> dict[str, Any]:
    """Bring an older document up to SCHEMA_VERSION, one step at a time.

    ``kind="run"`` is a ``run.json`` (its own ``schema_version``; 1 when absent); ``kind="variant"``
    is a ``variants/*.json`` record, which carries no version: pass its run's ``version``.
    """
    found = int(version if version is not None else document.get("schema_version", 1))
    if found > SCHEMA_VERSION:
        raise UsageError(
            f"report schema {found} is newer than this workbench reads ({SCHEMA_VERSION}): upgrade workbench"
        )
    upgraded = dict(document)
    for step in range(found, SCHEMA_VERSION):
        upgraded = MIGRATIONS[kind][step](upgraded)
    if kind == "run":
        upgraded["schema_version"] = SCHEMA_VERSION
    return upgraded
