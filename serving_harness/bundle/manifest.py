"""``manifest.json``: the schema, and the rules that keep a bundle data (never code) and closed.

A manifest is read only as a complete, known format version (``format`` first, then every field with
``extra="forbid"``): anything else is refused, never read as something looser. Every path in it is
relative, normalised and inside the bundle, and every file it uses is listed in ``files`` (so hashed).
The artifact format comes from an allowlist, each with the runtimes that may run it: no format a
bundle may carry names code to import.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from serving_harness.config import ServingConfig
from serving_harness.errors import BundleError, validation_message
from serving_harness.runtimes.base import TensorSpec

__all__ = [
    "ARTIFACT_RUNTIMES",
    "BUNDLE_FORMAT",
    "MANIFEST_FILE",
    "SEMVER",
    "SIGNATURE_FILE",
    "BundleManifest",
    "FallbackSpec",
    "GoldenSpec",
    "SloSpec",
    "check_runtime",
    "manifest_bytes",
    "parse_manifest",
    "read_manifest",
]

MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"  # detached signature over manifest.json's bytes (serving_harness.bundle.trust)
BUNDLE_FORMAT: Literal["serving-bundle/1"] = "serving-bundle/1"
KNOWN_FORMATS = (BUNDLE_FORMAT,)
# artifact format -> the runtimes that may run it. Data only: torch-factory (a callable named by
# reference) is a lab artifact and never ships; a new format joins here with a runtime that imports no
# code from the bundle.
ARTIFACT_RUNTIMES: dict[str, tuple[str, ...]] = {"onnx": ("onnxruntime",)}
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


def _inside(path: str) -> str:
    """``path`` when it is relative, normalised POSIX and inside the bundle; else ValueError saying why."""
    pure = PurePosixPath(path)
    if not path or path.startswith("/") or "\\" in path or re.match(r"^[A-Za-z]:", path):
        raise ValueError(f"path {path!r} must be relative to the bundle (no absolute or Windows paths)")
    if ".." in pure.parts:
        raise ValueError(f"path {path!r} leaves the bundle ('..')")
    if pure.as_posix() != path or "." in path.split("/"):
        raise ValueError(f"path {path!r} is not normalised (write {pure.as_posix()!r})")
    if path in (MANIFEST_FILE, SIGNATURE_FILE):
        raise ValueError(f"path {path!r} is the manifest or its signature, not a bundle file")
    return path


BundlePath = Annotated[str, AfterValidator(_inside)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GoldenSpec(_Frozen):
    """Golden inputs and the expected outputs; an output passes when ``|got - want| <= atol + rtol * |want|``."""

    inputs: BundlePath
    outputs: BundlePath
    rtol: float = Field(ge=0)
    atol: dict[str, float] = Field(description="Per output name.")


class FallbackSpec(_Frozen):
    """The variant that answers when the primary errors, times out or cannot load."""

    variant: str
    artifact: BundlePath
    serving: BundlePath
    primary_timeout_s: float = Field(gt=0, description="The primary's request timeout when a fallback is there.")
    golden: GoldenSpec | None = None


class SloSpec(BaseModel):
    """Measured service levels and the budgets the alert rules use. The lab may add figures (extra keys)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    source: Literal["served", "inprocess"]
    latency_budget_ms_p99: float = Field(gt=0)
    error_rate_max: float = Field(ge=0, le=1)
    latency_ms_p50: float | None = None
    latency_ms_p99: float | None = None
    max_throughput_rps_under_sla: float | None = None


class BundleManifest(_Frozen):
    """``manifest.json``. The harness reads the typed fields; ``source``, ``lineage`` and ``accuracy`` are for people."""

    format: Literal["serving-bundle/1"]
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: str
    created: str
    artifact: BundlePath
    artifact_format: str
    serving: BundlePath = "serving.json"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    source: dict[str, Any] = Field(default_factory=dict)
    lineage: list[dict[str, Any]] = Field(default_factory=list)
    slo: SloSpec
    accuracy: dict[str, Any] = Field(default_factory=dict)
    golden: GoldenSpec
    drift_baseline: BundlePath | None = None
    fallback: FallbackSpec | None = None
    requirements: BundlePath = "requirements.txt"
    files: dict[BundlePath, Sha256] = Field(
        description="Relative POSIX path -> sha256 of every file but manifest.json."
    )

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not SEMVER.match(value):
            raise ValueError(f"version {value!r} is not a semantic version (MAJOR.MINOR.PATCH[-pre][+build])")
        return value

    @field_validator("artifact_format")
    @classmethod
    def _allowed_format(cls, value: str) -> str:
        if value not in ARTIFACT_RUNTIMES:
            raise ValueError(
                f"artifact format {value!r} is not one a bundle may carry (allowed: {', '.join(ARTIFACT_RUNTIMES)}): "
                "a bundle is data, never code to import"
            )
        return value

    @model_validator(mode="after")
    def _every_used_file_is_listed(self) -> BundleManifest:
        unlisted = [(field, path) for field, path in self.used_files() if path not in self.files]
        if unlisted:
            field, path = unlisted[0]
            raise ValueError(f"{field} {path!r} is not listed in files: every file a bundle uses is hashed")
        return self

    def used_files(self) -> list[tuple[str, str]]:
        """(field, path) of every file the harness reads besides the manifest."""
        used = [
            ("artifact", self.artifact),
            ("serving", self.serving),
            ("golden.inputs", self.golden.inputs),
            ("golden.outputs", self.golden.outputs),
            ("requirements", self.requirements),
        ]
        if self.drift_baseline is not None:
            used.append(("drift_baseline", self.drift_baseline))
        if self.fallback is not None:
            used += [("fallback.artifact", self.fallback.artifact), ("fallback.serving", self.fallback.serving)]
            if self.fallback.golden is not None:
                used.append(("fallback.golden.outputs", self.fallback.golden.outputs))
        return used


def read_manifest(root: Path) -> BundleManifest:
    """The bundle's manifest, validated as a complete, known format version; BundleError names what is wrong."""
    return parse_manifest(manifest_bytes(root), root / MANIFEST_FILE)


def manifest_bytes(root: Path) -> bytes:
    """``manifest.json``'s bytes, read once: the digest, the signature and the schema all judge these."""
    path = root / MANIFEST_FILE
    if path.is_symlink() or not path.is_file():
        raise BundleError(f"{path}: missing or not a plain file: not a bundle")
    return path.read_bytes()


def parse_manifest(raw: bytes, path: Path) -> BundleManifest:
    """``raw`` (read from ``path``) as a manifest of a known format, every field checked."""
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise BundleError(f"{path}: not JSON ({exc})") from None
    _check_format(path, document)
    try:
        return BundleManifest.model_validate(document)
    except ValidationError as exc:
        raise BundleError(f"{path}: {validation_message(exc)}") from None


def _check_format(path: Path, document: object) -> None:
    """A manifest without a known ``format`` is refused outright, never read as a plain model directory."""
    if not isinstance(document, dict):
        raise BundleError(f"{path}: must hold a JSON object")
    if "format" not in document:
        raise BundleError(f"{path}: format is missing: not a complete bundle manifest (expected {BUNDLE_FORMAT!r})")
    if document["format"] not in KNOWN_FORMATS:
        known = ", ".join(KNOWN_FORMATS)
        raise BundleError(f"{path}: format {document['format']!r} is not a known bundle format ({known})")


def check_runtime(settings: ServingConfig, artifact_format: str, where: str) -> None:
    """BundleError unless ``settings`` runs ``artifact_format`` with a runtime the allowlist pairs it with."""
    allowed = ARTIFACT_RUNTIMES.get(artifact_format, ())
    if settings.runtime.name not in allowed:
        raise BundleError(
            f"{where}: runtime {settings.runtime.name!r} does not match the manifest's artifact format "
            f"{artifact_format!r} (allowed: {', '.join(allowed) or 'none'})"
        )
