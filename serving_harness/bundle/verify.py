"""``verify_bundle``: every check of ``load_bundle``, then the golden inputs run on this machine."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serving_harness.bundle.load import LoadedBundle, load_bundle
from serving_harness.bundle.manifest import MANIFEST_FILE, GoldenSpec
from serving_harness.bundle.trust import check_outside_judge
from serving_harness.config import ServingConfig
from serving_harness.errors import BundleError
from serving_harness.runtimes import create_runtime

__all__ = ["Check", "Verification", "golden_checks", "verify_bundle"]


@dataclass(frozen=True)
class Check:
    """One verification: what was checked, whether it passed, the evidence."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Verification:
    """Every check of ``verify_bundle``; ``ok`` when all passed. ``signed_by``: the trusted key that signed it."""

    path: Path
    digest: str
    checks: list[Check] = field(default_factory=list)
    signed_by: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)


def verify_bundle(
    path: Path | str, *, digest: str | None = None, trust: Path | str | None = None, golden: bool = True
) -> Verification:
    """Every check of ``load_bundle`` (files, format, paths, digest, signature), then the golden outputs here.

    A bundle that fails a check is reported and its models are never loaded. The harness running this
    must be installed outside the bundle: a vendored copy cannot vouch for the bundle it ships in.
    """
    root = Path(path)
    manifest_path = root / MANIFEST_FILE
    found = hashlib.sha256(manifest_path.read_bytes()).hexdigest() if manifest_path.is_file() else ""
    try:
        check_outside_judge(root)
        bundle = load_bundle(root, digest=digest, trust=trust)
    except BundleError as exc:
        return Verification(root, found, [Check("files", False, str(exc))])
    signed = f"; manifest signed by trusted key {bundle.signed_by}" if bundle.signed_by else ""
    files = Check("files", True, f"sha256 of {len(bundle.manifest.files)} files match the manifest{signed}")
    checks = [files, *(golden_checks(bundle) if golden else [])]
    return Verification(root, bundle.digest, checks, signed_by=bundle.signed_by)


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
