"""``manifest.json``: what a bundle is, where it came from, what it measured, and every file's sha256.

The schema is ``serving_harness.bundle.BundleManifest`` (the harness reads it without the lab);
this module fills it from a run's records and seals it: the sha256 of every file in the bundle
directory is taken last, after every other file is written.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving_harness.bundle import (
    BUNDLE_FORMAT,
    MANIFEST_FILE,
    SEMVER,
    BundleManifest,
    bundle_files,
    file_sha256,
)
from serving_harness.runtimes.base import ModelMetadata
from workbench.errors import UsageError
from workbench.report.schema import RunEnvelope, VariantRecord

__all__ = ["check_version", "manifest_document", "seal", "source_section"]


def check_version(version: str) -> str:
    """``version`` when it is a semantic version, else a UsageError that says the form."""
    if not SEMVER.match(version):
        raise UsageError(f"bundle version {version!r} is not a semantic version: use MAJOR.MINOR.PATCH, e.g. 1.2.0")
    return version


def source_section(envelope: RunEnvelope, record: VariantRecord) -> dict[str, Any]:
    """The run and variant a bundle was exported from, with the environment they were measured in."""
    environment = envelope.environment
    return {
        "run_id": envelope.run_id,
        "recipe": envelope.recipe_name,
        "spec_hash": envelope.spec_hash,
        "run_created": envelope.created.isoformat(),
        "workbench_version": envelope.workbench_version,
        "variant": record.variant,
        "pipeline": record.pipeline,
        "serving_label": record.serving_label,
        "artifact_content_hash": record.artifact.content_hash if record.artifact else None,
        "git": environment.get("git"),
        "cpu": environment.get("cpu"),
        "python": environment.get("python"),
    }


def manifest_document(
    *,
    name: str,
    version: str,
    metadata: ModelMetadata,
    source: dict[str, Any],
    record: VariantRecord,
    slo: dict[str, Any],
    golden: dict[str, Any],
    drift_baseline: str,
    fallback: dict[str, Any] | None,
) -> dict[str, Any]:
    """Every manifest field but ``files`` (see ``seal``)."""
    quality = record.quality
    return {
        "format": BUNDLE_FORMAT,
        "name": name,
        "version": check_version(version),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "artifact": "model/model.onnx",
        "artifact_format": "onnx",
        "serving": "serving.json",
        "inputs": [spec.model_dump() for spec in metadata.inputs],
        "outputs": [spec.model_dump() for spec in metadata.outputs],
        "source": source,
        "lineage": [vars(entry) for entry in record.lineage],
        "slo": slo,
        "accuracy": quality.model_dump(exclude={"outputs"}) if quality else {},
        "golden": golden,
        "drift_baseline": drift_baseline,
        "fallback": fallback,
        "requirements": "requirements.txt",
    }


def seal(directory: Path, document: dict[str, Any]) -> BundleManifest:
    """Hash every file under ``directory``, validate the manifest and write ``manifest.json``."""
    files = {name: file_sha256(directory / name) for name in bundle_files(directory)}
    manifest = BundleManifest.model_validate({**document, "files": files})
    text = json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n"
    (directory / MANIFEST_FILE).write_text(text)
    return manifest
