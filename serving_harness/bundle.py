"""Bundles: a directory that serves one model version with ``python -m serving_harness serve DIR``.

::

    manifest.json          what the bundle is (name, semver version, source run, lineage, SLOs, accuracy,
                           input/output schema) and the sha256 of every other file
    serving.json           ServingConfig as measured
    model/model.onnx       the artifact
    golden/                inputs.npz, outputs.npz (and fallback-outputs.npz): checked with tolerances
    drift/baseline.json    the drift baseline (serving_harness.drift)
    fallback/              optional: the baseline variant's artifact and serving.json
    requirements.txt       the serving dependencies, pinned
    vendor/serving_harness the server's own source (PYTHONPATH=vendor: no install of the lab needed)
    monitoring/ deploy/ Dockerfile README.md

``load_bundle`` refuses a bundle whose files do not match the manifest, naming the first file that
is missing, changed or not listed; ``verify_bundle`` also runs the golden inputs on this machine and
compares the outputs with the manifest's tolerances. Nothing is unpickled: the manifest, settings and
baseline are JSON, golden tensors are ``.npz`` read with ``allow_pickle=False``, and bundles carry
ONNX artifacts only. ``manifest.json`` cannot hash itself: pin it with its digest
(``verify --digest`` / ``serve --digest``; ``verify`` prints it).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serving_harness.config import LimitsSettings, ServingConfig
from serving_harness.errors import BundleError, validation_message
from serving_harness.model import ModelConfig
from serving_harness.runtimes import create_runtime
from serving_harness.runtimes.base import TensorSpec

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST_FILE",
    "BundleError",
    "BundleManifest",
    "Check",
    "FallbackSpec",
    "GoldenSpec",
    "LoadedBundle",
    "LoadedFallback",
    "SloSpec",
    "Verification",
    "bundle_files",
    "file_sha256",
    "is_bundle",
    "load_bundle",
    "verify_bundle",
]

MANIFEST_FILE = "manifest.json"
BUNDLE_FORMAT: Literal["serving-bundle/1"] = "serving-bundle/1"
FALLBACK_SUFFIX = "+fallback"  # the fallback's version label: semver build metadata of the primary's
# Written by Python itself when the vendored source runs: never part of what was shipped.
_UNTRACKED_DIRS = frozenset({"__pycache__"})
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GoldenSpec(_Frozen):
    """Golden inputs and the expected outputs; an output passes when ``|got - want| <= atol + rtol * |want|``."""

    inputs: str
    outputs: str
    rtol: float = Field(ge=0)
    atol: dict[str, float] = Field(description="Per output name.")


class FallbackSpec(_Frozen):
    """The variant that answers when the primary errors, times out or cannot load."""

    variant: str
    artifact: str
    serving: str
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

    format: Literal["serving-bundle/1"] = BUNDLE_FORMAT
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: str
    created: str
    artifact: str
    artifact_format: Literal["onnx"] = "onnx"
    serving: str = "serving.json"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    source: dict[str, Any] = Field(default_factory=dict)
    lineage: list[dict[str, Any]] = Field(default_factory=list)
    slo: SloSpec
    accuracy: dict[str, Any] = Field(default_factory=dict)
    golden: GoldenSpec
    drift_baseline: str | None = None
    fallback: FallbackSpec | None = None
    requirements: str = "requirements.txt"
    files: dict[str, str] = Field(description="Relative POSIX path -> sha256 of every file but manifest.json.")

    @field_validator("version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not SEMVER.match(value):
            raise ValueError(f"version {value!r} is not a semantic version (MAJOR.MINOR.PATCH[-pre][+build])")
        return value

    @field_validator("files")
    @classmethod
    def _relative(cls, files: dict[str, str]) -> dict[str, str]:
        for name in files:
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or not parts:
                raise ValueError(f"file {name!r} must be a relative path inside the bundle")
        return files


@dataclass(frozen=True)
class LoadedFallback:
    """The fallback variant of a bundle, ready to serve."""

    variant: str
    artifact: Path
    settings: ServingConfig
    primary_timeout_s: float


@dataclass(frozen=True)
class LoadedBundle:
    """A bundle whose files match its manifest."""

    path: Path
    name: str
    version: str
    artifact: Path
    settings: ServingConfig
    manifest: BundleManifest
    fallback: LoadedFallback | None = None
    drift_baseline: Path | None = None

    @property
    def digest(self) -> str:
        """sha256 of manifest.json: pins the whole bundle (the manifest pins every other file)."""
        return file_sha256(self.path / MANIFEST_FILE)

    def model_config(self, settings: ServingConfig | None = None, *, drift: bool = True) -> ModelConfig:
        """The ModelConfig that serves this bundle (with ``settings`` in place of serving.json's, if given).

        With a fallback, the primary's request timeout is cut to ``primary_timeout_s`` so a slow
        primary is answered by the fallback in time.
        """
        own = settings or self.settings
        fallback = None
        if self.fallback is not None:
            own = _with_timeout(own, self.fallback.primary_timeout_s)
            fallback = ModelConfig(
                name=self.name,
                path=self.fallback.artifact,
                version=self.version + FALLBACK_SUFFIX,
                settings=self.fallback.settings,
            )
        return ModelConfig(
            name=self.name,
            path=self.artifact,
            version=self.version,
            settings=own,
            drift_baseline=self.drift_baseline if drift else None,
            fallback=fallback,
        )


def _with_timeout(settings: ServingConfig, timeout_s: float) -> ServingConfig:
    if settings.limits.request_timeout_s <= timeout_s:
        return settings
    limits = LimitsSettings(**{**settings.limits.model_dump(), "request_timeout_s": timeout_s})
    return settings.model_copy(update={"limits": limits})


# ---------------------------------------------------------------------------------------------- files


def file_sha256(path: Path) -> str:
    """sha256 of one file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_files(root: Path) -> Iterator[str]:
    """Every file of a bundle as a relative POSIX path, sorted; not manifest.json, not ``__pycache__``."""
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and relative.as_posix() != MANIFEST_FILE and not _UNTRACKED_DIRS & set(relative.parts):
            yield relative.as_posix()


def is_bundle(directory: Path) -> bool:
    """True when ``directory`` holds a bundle manifest (one with checksums), not a bare model directory."""
    manifest = directory / MANIFEST_FILE
    if not manifest.is_file():
        return False
    try:
        document = json.loads(manifest.read_text())
    except ValueError:
        return True  # a broken manifest is a broken bundle: load_bundle says why
    return isinstance(document, dict) and document.get("format") == BUNDLE_FORMAT


def _file_problems(root: Path, files: dict[str, str]) -> Iterator[str]:
    for name, expected in files.items():
        path = root / name
        if not path.is_file():
            yield f"{name}: missing"
        elif file_sha256(path) != expected:
            yield f"{name}: sha256 differs from the manifest (changed after export)"
    for name in bundle_files(root):
        if name not in files:
            yield f"{name}: not listed in the manifest (added after export)"


def read_manifest(root: Path) -> BundleManifest:
    """The bundle's manifest, validated; BundleError names what is wrong."""
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{root}: {MANIFEST_FILE} is missing: not a bundle")
    try:
        return BundleManifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise BundleError(f"{path}: {validation_message(exc)}") from None


def _check_digest(root: Path, expected: str | None) -> None:
    if expected is not None and file_sha256(root / MANIFEST_FILE) != expected.lower():
        raise BundleError(f"{root / MANIFEST_FILE}: sha256 differs from the pinned digest {expected}")


def _settings(root: Path, name: str) -> ServingConfig:
    data = json.loads((root / name).read_text())
    if not isinstance(data, dict):
        raise BundleError(f"{root / name}: must hold a JSON object (ServingConfig)")
    try:
        return ServingConfig(**data)
    except ValidationError as exc:
        raise BundleError(f"{root / name}: {validation_message(exc)}") from None


def load_bundle(path: Path | str, *, digest: str | None = None) -> LoadedBundle:
    """Read a bundle after checking every file against its manifest (and the manifest against ``digest``).

    Raises BundleError naming the first file that is missing, changed or unlisted.
    """
    root = Path(path)
    _check_digest(root, digest)
    manifest = read_manifest(root)
    problem = next(_file_problems(root, manifest.files), None)
    if problem is not None:
        raise BundleError(f"refusing bundle {root}: {problem}")
    fallback = None
    if manifest.fallback is not None:
        spec = manifest.fallback
        fallback = LoadedFallback(
            spec.variant, root / spec.artifact, _settings(root, spec.serving), spec.primary_timeout_s
        )
    return LoadedBundle(
        path=root,
        name=manifest.name,
        version=manifest.version,
        artifact=root / manifest.artifact,
        settings=_settings(root, manifest.serving),
        manifest=manifest,
        fallback=fallback,
        drift_baseline=root / manifest.drift_baseline if manifest.drift_baseline else None,
    )


# ---------------------------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class Check:
    """One verification: what was checked, whether it passed, the evidence."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Verification:
    """Every check of ``verify_bundle``; ``ok`` when all passed."""

    path: Path
    digest: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)


def verify_bundle(path: Path | str, *, digest: str | None = None, golden: bool = True) -> Verification:
    """Check every file's sha256, then run the golden inputs here and compare outputs with tolerances.

    A tampered bundle is reported and its models are never loaded.
    """
    root = Path(path)
    manifest_path = root / MANIFEST_FILE
    found = file_sha256(manifest_path) if manifest_path.is_file() else ""
    report = Verification(root, found)
    try:
        bundle = load_bundle(root, digest=digest)
    except BundleError as exc:
        report.checks.append(Check("files", False, str(exc)))
        return report
    report.checks.append(Check("files", True, f"sha256 of {len(bundle.manifest.files)} files match the manifest"))
    if golden:
        report.checks.extend(golden_checks(bundle))
    return report


def golden_checks(bundle: LoadedBundle) -> list[Check]:
    """Run the golden inputs through the primary (and the fallback) with the bundle's runtime settings."""
    manifest = bundle.manifest
    inputs = _read_npz(bundle.path / manifest.golden.inputs)
    checks = [_golden("golden", bundle.artifact, bundle.settings, inputs, bundle.path, manifest.golden)]
    if bundle.fallback is not None and manifest.fallback is not None and manifest.fallback.golden is not None:
        fallback = bundle.fallback
        checks.append(
            _golden(
                "golden fallback", fallback.artifact, fallback.settings, inputs, bundle.path, manifest.fallback.golden
            )
        )
    return checks


def _golden(
    name: str, artifact: Path, settings: ServingConfig, inputs: dict[str, np.ndarray], root: Path, spec: GoldenSpec
) -> Check:
    expected = _read_npz(root / spec.outputs)
    try:
        runtime = create_runtime(settings.runtime.name)
        runtime.load(artifact, settings.runtime)
        got = runtime.infer(inputs)
    except Exception as exc:  # the model does not run here: that is the finding
        return Check(name, False, f"{artifact.name} did not run: {type(exc).__name__}: {exc}")
    failures, worst = _compare(got, expected, spec)
    rows = len(next(iter(inputs.values())))
    if failures:
        return Check(name, False, f"{rows} golden rows: " + "; ".join(failures))
    return Check(name, True, f"{rows} golden rows within tolerance ({worst})")


def _compare(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], spec: GoldenSpec) -> tuple[list[str], str]:
    failures, figures = [], []
    for output, want in expected.items():
        if output not in got:
            failures.append(f"output {output!r} is missing")
            continue
        have = np.asarray(got[output], dtype=np.float64)
        if have.shape != want.shape:
            failures.append(f"output {output!r} has shape {have.shape}, expected {want.shape}")
            continue
        atol = spec.atol.get(output, 0.0)
        excess = np.abs(have - want) - (atol + spec.rtol * np.abs(want))
        figures.append(f"{output}: max |diff| {float(np.abs(have - want).max()):.3g}, atol {atol:.3g}")
        if (excess > 0).any():
            failures.append(
                f"output {output!r}: {int((excess > 0).sum())} values beyond atol {atol:.3g} + rtol {spec.rtol:g}"
            )
    return failures, "; ".join(figures)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}
