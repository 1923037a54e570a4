"""``load_bundle``: the one way a bundle gets in. Every check runs before anything in it is used.

In order: the manifest's bytes are read once; their sha256 must equal ``digest`` (when pinned) and
their signature must verify with ``trust`` (when given); the manifest must be a complete, known format
version; the file set must be closed (every listed file there with its sha256, nothing unlisted,
``__pycache__`` included, no symbolic link, nothing but plain files and folders); the runtime in
serving.json must be one the artifact format allows. BundleError names the reason and the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from serving_harness.bundle.manifest import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    BundleManifest,
    check_runtime,
    manifest_bytes,
    parse_manifest,
)
from serving_harness.bundle.trust import check_outside_judge, check_signature, harness_inside
from serving_harness.config import LimitsSettings, ServingConfig
from serving_harness.errors import BundleError, validation_message
from serving_harness.model import ModelConfig

__all__ = ["LoadedBundle", "LoadedFallback", "bundle_files", "file_sha256", "is_bundle", "load_bundle"]

logger = logging.getLogger(__name__)
FALLBACK_SUFFIX = "+fallback"  # the fallback's version label: semver build metadata of the primary's
_UNLISTED = frozenset({MANIFEST_FILE, SIGNATURE_FILE})  # cannot hash themselves


@dataclass(frozen=True)
class LoadedFallback:
    """The fallback variant of a bundle, ready to serve."""

    variant: str
    artifact: Path
    settings: ServingConfig
    primary_timeout_s: float


@dataclass(frozen=True)
class LoadedBundle:
    """A bundle that passed every check; ``signed_by`` is the trusted key's id when ``--trust`` verified it."""

    path: Path
    name: str
    version: str
    artifact: Path
    settings: ServingConfig
    manifest: BundleManifest
    digest: str  # sha256 of manifest.json: pins the whole bundle (the manifest pins every other file)
    fallback: LoadedFallback | None = None
    drift_baseline: Path | None = None
    signed_by: str | None = None

    def model_config(self, settings: ServingConfig | None = None, *, drift: bool = True) -> ModelConfig:
        """The ModelConfig that serves this bundle (with ``settings`` in place of serving.json's, if given).

        With a fallback, the primary's request timeout is cut to ``primary_timeout_s`` so a slow
        primary is answered by the fallback in time.
        """
        own = settings or self.settings
        trusted = self.signed_by is not None
        fallback = None
        if self.fallback is not None:
            own = _with_timeout(own, self.fallback.primary_timeout_s)
            fallback = ModelConfig(
                name=self.name,
                path=self.fallback.artifact,
                version=self.version + FALLBACK_SUFFIX,
                settings=self.fallback.settings,
                trusted=trusted,
            )
        return ModelConfig(
            name=self.name,
            path=self.artifact,
            version=self.version,
            settings=own,
            drift_baseline=self.drift_baseline if drift else None,
            fallback=fallback,
            trusted=trusted,
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


def _tree(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under ``root`` (relative POSIX path, lstat), sorted by path; links are reported, never followed."""
    found = []
    for folder, folders, names in os.walk(root, followlinks=False):
        for name in [*folders, *names]:
            path = Path(folder) / name
            found.append((path.relative_to(root).as_posix(), path.lstat()))
    yield from sorted(found, key=lambda entry: entry[0])


def bundle_files(root: Path) -> Iterator[str]:
    """Every plain file of a bundle as a relative POSIX path, sorted; not manifest.json or its signature."""
    for name, info in _tree(root):
        if stat.S_ISREG(info.st_mode) and name not in _UNLISTED:
            yield name


def is_bundle(directory: Path) -> bool:
    """True when ``directory`` holds a manifest.json: then it is a bundle, loaded only through the checks."""
    manifest = directory / MANIFEST_FILE
    return manifest.exists() or manifest.is_symlink()


def file_problems(root: Path, files: dict[str, str]) -> Iterator[str]:
    """What keeps the file set from matching ``files``: ``path: reason``, the first one first."""
    for name, info in _tree(root):
        if stat.S_ISLNK(info.st_mode):
            yield f"{name}: a symbolic link (a bundle holds plain files only)"
        elif not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            yield f"{name}: not a plain file"
        elif stat.S_ISREG(info.st_mode) and name not in files and name not in _UNLISTED:
            yield f"{name}: not listed in the manifest (added after export{_bytecode_hint(name)})"
    for name, expected in files.items():
        path = root / name
        if path.is_symlink() or not path.is_file():
            yield f"{name}: missing"
        elif file_sha256(path) != expected:
            yield f"{name}: sha256 differs from the manifest (changed after export)"


def _bytecode_hint(name: str) -> str:
    if name.endswith(".pyc") or "/__pycache__/" in f"/{name}":
        return "; code the bundle did not ship, or bytecode from running its vendored copy without PYTHONDONTWRITEBYTECODE=1"
    return ""


# ---------------------------------------------------------------------------------------------- load


def load_bundle(path: Path | str, *, digest: str | None = None, trust: Path | str | None = None) -> LoadedBundle:
    """Read a bundle after every check (see the module docstring); BundleError names the reason and the file.

    ``digest``: the sha256 manifest.json must have. ``trust``: a PEM Ed25519 public key whose signature
    the manifest must carry. With either, the harness running this must be installed outside the bundle.
    """
    root = Path(path)
    if digest is not None or trust is not None:
        check_outside_judge(root)
    elif harness_inside(root):
        logger.warning("bundle %s is checked by its own vendored harness: install a harness outside it", root)
    raw = manifest_bytes(root)
    _check_digest(root, raw, digest)
    signed_by = check_signature(root, raw, Path(trust)) if trust is not None else None
    manifest = parse_manifest(raw, root / MANIFEST_FILE)
    problem = next(file_problems(root, manifest.files), None)
    if problem is not None:
        raise BundleError(f"refusing bundle {root}: {problem}")
    return LoadedBundle(
        path=root,
        name=manifest.name,
        version=manifest.version,
        artifact=root / manifest.artifact,
        settings=_settings(root, manifest.serving, manifest.artifact_format),
        manifest=manifest,
        digest=hashlib.sha256(raw).hexdigest(),
        fallback=_fallback(root, manifest),
        drift_baseline=root / manifest.drift_baseline if manifest.drift_baseline else None,
        signed_by=signed_by,
    )


def _check_digest(root: Path, raw: bytes, expected: str | None) -> None:
    if expected is not None and hashlib.sha256(raw).hexdigest() != expected.strip().lower():
        raise BundleError(f"{root / MANIFEST_FILE}: sha256 differs from the pinned digest {expected}")


def _fallback(root: Path, manifest: BundleManifest) -> LoadedFallback | None:
    spec = manifest.fallback
    if spec is None:
        return None
    settings = _settings(root, spec.serving, manifest.artifact_format)
    return LoadedFallback(spec.variant, root / spec.artifact, settings, spec.primary_timeout_s)


def _settings(root: Path, name: str, artifact_format: str | None = None) -> ServingConfig:
    """``name``'s ServingConfig; with ``artifact_format``, its runtime must be one that format allows."""
    data = json.loads((root / name).read_text())
    if not isinstance(data, dict):
        raise BundleError(f"{root / name}: must hold a JSON object (ServingConfig)")
    try:
        settings = ServingConfig(**data)
    except ValidationError as exc:
        raise BundleError(f"{root / name}: {validation_message(exc)}") from None
    if artifact_format is not None:
        check_runtime(settings, artifact_format, str(root / name))
    return settings
