"""Report schema, version 2. Every metric name carries its unit (``latency_ms``, ``throughput_rps``).

Readers accept every older version through explicit migrations in ``migrate``. What changed:

- 2: a measurement's label is ``case`` (was ``step``, a word that also meant a build step and a load
  step); ``results.parquet``'s column likewise (``RunDir.read_results`` renames an old file's).
  A record's ``serving``, ``steps`` and ``lineage`` are typed; their JSON is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving_harness.config import ServingConfig
from workbench.artifact import LineageEntry
from workbench.errors import UsageError
from workbench.measure.result import Measurement
from workbench.recipe.spec import StepSpec

__all__ = [
    "SCHEMA_VERSION",
    "ArtifactInfo",
    "ExternalServing",
    "LineageEntry",
    "Measurement",
    "Quality",
    "RunEnvelope",
    "StepSpec",
    "VariantRecord",
]

SCHEMA_VERSION = 2

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
    output: str | None = Field(default=None, description="The model output the metric scored (None: all, or unknown).")


class ExternalServing(_Model):
    """An endpoint the workbench measured but did not serve (``workbench load URL``): where it was."""

    url: str
    model: str


class VariantRecord(_Model):
    """One variant: how it was built (``steps``, ``lineage``) and served, whether it passed, what it measured."""

    variant: str
    pipeline: str
    is_baseline: bool
    steps: list[StepSpec]
    serving: ServingConfig | ExternalServing
    serving_label: str
    runtime: str
    status: VariantStatus
    reason: str | None = None
    error: str | None = None
    artifact: ArtifactInfo | None = None
    lineage: list[LineageEntry] = Field(default_factory=list)
    build_figures: dict[str, float] = Field(default_factory=dict)
    build_s: float = 0.0
    quality: Quality | None = None
    measurements: list[Measurement] = Field(default_factory=list)
    pool: str | None = Field(default=None, description="The cluster pool it was measured on (cluster.targets).")
    attempts: int = Field(default=1, ge=1, description="Runs of its measurement (above 1: retried after a lost node).")
    environment: dict[str, Any] | None = Field(
        default=None, description="The measuring node's fingerprint (a cluster run); None: the run's own."
    )


Migration = Callable[[dict[str, Any]], dict[str, Any]]
DocumentKind = Literal["run", "variant"]


def _unchanged(document: dict[str, Any]) -> dict[str, Any]:
    return document


def _measurement_case_v2(document: dict[str, Any]) -> dict[str, Any]:
    """v1 → v2 of a variant record: each measurement's ``step`` is its ``case``."""
    if "measurements" not in document:
        return document
    renamed = [
        {("case" if key == "step" else key): value for key, value in m.items()} for m in document["measurements"]
    ]
    return {**document, "measurements": renamed}


# MIGRATIONS[kind][n] turns a version-n document into a version n+1 one. Bumping SCHEMA_VERSION means
# adding one migration per kind here (and a golden report of the old version under tests/report/golden/);
# a migration is never edited once released, so every report ever written stays readable.
MIGRATIONS: dict[DocumentKind, dict[int, Migration]] = {
    "run": {1: _unchanged},  # run.json's fields did not change in v2; its version did
    "variant": {1: _measurement_case_v2},
}


def migrate(document: dict[str, Any], *, kind: DocumentKind = "run", version: int | None = None) -> dict[str, Any]:
    """Bring an older document up to SCHEMA_VERSION, one version at a time.

    ``kind="run"`` is a ``run.json`` (its own ``schema_version``; 1 when absent); ``kind="variant"``
    is a ``variants/*.json`` record, which carries no version: pass its run's ``version``.
    """
    found = int(version if version is not None else document.get("schema_version", 1))
    if found > SCHEMA_VERSION:
        raise UsageError(
            f"report schema {found} is newer than this workbench reads ({SCHEMA_VERSION}): upgrade workbench"
        )
    upgraded = dict(document)
    for older in range(found, SCHEMA_VERSION):
        upgraded = MIGRATIONS[kind][older](upgraded)
    if kind == "run":
        upgraded["schema_version"] = SCHEMA_VERSION
    return upgraded
