"""``workbench export RUN --variant best --out bundles/digits-1.2.0``: a run's variant as a bundle.

The bundle is assembled in a hidden folder next to ``out`` and renamed into place when complete, so a
half-written bundle never exists under its name; bundles are immutable (an existing ``out`` is
refused). ``out`` is also archived as ``<out>.tar.gz`` (sorted members, fixed times and owners: the
same bundle gives the same archive bytes).

Only ONNX variants ship: they run anywhere ONNX Runtime does, and load without unpickling anything
or importing code. A torch-factory variant (a Python callable named by reference) is refused, not
converted, with a message saying to add ``export.onnx`` to its pipeline: the converted model would be a
variant the run never measured. The fallback (``auto``) is the recipe's baseline when it is ONNX,
else the plain fp32 ONNX export. With ``sign``, ``manifest.sig`` (a detached Ed25519 signature over
the manifest, see ``workbench.bundle.sign``) is written before the bundle is renamed into place.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import serving_harness
from serving_harness.bundle import BundleManifest, FallbackSpec, GoldenSpec, file_sha256
from serving_harness.config import ServingConfig
from workbench.artifact import hash_path, resolve_recorded_path
from workbench.bundle.deploy import DeployOptions, render_deployment
from workbench.bundle.evidence import drift_baseline, golden_set, load_runtime, save_npz, tolerances
from workbench.bundle.manifest import check_version, manifest_document, seal, source_section
from workbench.bundle.requirements import pinned_requirements, requirements_text
from workbench.bundle.sign import load_signing_key, sign_bundle, signing_key_id
from workbench.bundle.slo import DEFAULT_ERROR_RATE_MAX, derive_slo
from workbench.data import load_dataset
from workbench.data.base import Dataset
from workbench.errors import NotFoundError, UsageError
from workbench.paths import cache_dir
from workbench.recipe.spec import Recipe
from workbench.report.rundir import ReportStore, RunDir
from workbench.report.schema import RunEnvelope, VariantRecord

__all__ = ["ExportedBundle", "export_bundle"]

logger = logging.getLogger(__name__)
MIN_PRIMARY_TIMEOUT_S = 1.0
PRIMARY_TIMEOUT_BUDGETS = 10  # the primary gets this many p99 budgets before the fallback answers
_VERSION_SUFFIX = re.compile(r"-(\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]*)?)$")


@dataclass(frozen=True)
class ExportedBundle:
    """Where the bundle and its archive are, its manifest, and the manifest's sha256 (the bundle's pin)."""

    path: Path
    archive: Path
    manifest: BundleManifest
    digest: str
    signed_by: str | None = None  # the signing key's id (``--sign``)


@dataclass(frozen=True)
class _Chosen:
    envelope: RunEnvelope
    recipe: Recipe
    record: VariantRecord
    fallback: VariantRecord | None
    run_dir: RunDir


def export_bundle(
    run: str | Path,
    *,
    out: str | Path | None = None,
    variant: str | None = None,
    name: str | None = None,
    version: str | None = None,
    fallback: str = "auto",
    reports: str | Path = "reports",
    p99_budget_ms: float | None = None,
    error_rate_max: float = DEFAULT_ERROR_RATE_MAX,
    deploy: DeployOptions | None = None,
    sign: str | Path | None = None,
) -> ExportedBundle:
    """Export one variant of a finished run as a bundle directory and a ``.tar.gz``.

    ``variant``: ``best`` (the run's selection; the recipe's ``export.variant`` by default), ``baseline``
    or a variant id. ``fallback``: ``auto``, ``none`` or a variant id. ``version``: a semantic
    version; by default the one ``out`` ends with (``bundles/digits-1.2.0``), else the recipe's.
    ``sign``: a PEM Ed25519 private key (``workbench keygen``) that signs the manifest.

    Example::

        bundle = export_bundle("latest", out="bundles/digits-1.2.0")
    """
    key = load_signing_key(Path(sign)) if sign is not None else None  # a bad key fails before any work
    chosen = _choose(ReportStore(reports).find(str(run)), variant, fallback)
    name = name or chosen.recipe.export.name or chosen.recipe.model.name or chosen.recipe.name
    target = Path(out) if out is not None else None
    version = check_version(version or _version_from(target) or chosen.recipe.export.version)
    target = target or Path("bundles") / f"{name}-{version}"
    if target.exists():
        raise UsageError(f"{target} exists: bundles are immutable, give another --out (or a new --version)")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        signer = signing_key_id(key) if key is not None else None
        options = _Options(name, version, p99_budget_ms, error_rate_max, deploy or DeployOptions(), signer)
        manifest = _assemble(staging, chosen, options)
        signed_by = sign_bundle(staging, key) if key is not None else None
        staging.chmod(0o755)  # mkdtemp made it private; a bundle is read by whoever serves it
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    archive = write_archive(target)
    digest = file_sha256(target / "manifest.json")
    logger.info("bundle %s (manifest sha256 %s, signed by %s), archive %s", target, digest, signed_by, archive)
    return ExportedBundle(path=target, archive=archive, manifest=manifest, digest=digest, signed_by=signed_by)


@dataclass(frozen=True)
class _Options:
    name: str
    version: str
    p99_budget_ms: float | None
    error_rate_max: float
    deploy: DeployOptions
    signer: str | None  # the signing key's id: the deployment files then pass --trust


def _version_from(out: Path | None) -> str | None:
    match = _VERSION_SUFFIX.search(out.name) if out is not None else None
    return match.group(1) if match else None


# --------------------------------------------------------------------------------------------- choosing


def _choose(run_dir: RunDir, variant: str | None, fallback: str) -> _Chosen:
    envelope = run_dir.read_envelope()
    try:
        recipe = Recipe.model_validate(envelope.recipe)
    except ValueError as exc:
        raise UsageError(f"run {run_dir.run_id}: its recipe no longer validates: {str(exc).splitlines()[0]}") from None
    records = run_dir.read_variants()
    record = _pick(records, envelope, variant or recipe.export.variant)
    _check_shippable(record)
    return _Chosen(envelope, recipe, record, _pick_fallback(records, record, fallback), run_dir)


def _pick(records: list[VariantRecord], envelope: RunEnvelope, wanted: str) -> VariantRecord:
    if wanted == "best":
        best = envelope.summary.get("best")
        if not best:
            raise UsageError(
                f"run {envelope.run_id} selected no variant ({envelope.summary.get('reason')}): name one with --variant"
            )
        wanted = str(best)
    found = [r for r in records if r.variant == wanted or (wanted == "baseline" and r.is_baseline)]
    if not found:
        known = ", ".join(r.variant for r in records) or "none"
        raise NotFoundError(f"run {envelope.run_id} has no variant {wanted!r} (it has: {known})")
    return found[0]


def _shippable(record: VariantRecord) -> bool:
    return record.status == "ok" and record.artifact is not None and record.artifact.format == "onnx"


def _check_shippable(record: VariantRecord) -> None:
    if record.status != "ok":
        raise UsageError(f"variant {record.variant!r} is {record.status} ({record.reason}): only ok variants ship")
    if record.artifact is None or record.artifact.format != "onnx":
        kind = record.artifact.format if record.artifact else "no"
        raise UsageError(
            f"variant {record.variant!r} is a {kind} artifact: bundles carry data, never code to import (a torch "
            "factory names a Python callable); ship its ONNX export instead: add export.onnx to its pipeline"
        )
    path = resolve_recorded_path(record.artifact.path, cache_dir())  # a run records it relative to the cache
    if not path.is_file():
        raise NotFoundError(
            f"variant {record.variant!r}: its artifact {path} is gone from the cache; run the recipe again"
        )
    if hash_path(path) != record.artifact.content_hash:
        raise UsageError(f"variant {record.variant!r}: {path} changed since the run measured it; run the recipe again")


def _pick_fallback(records: list[VariantRecord], primary: VariantRecord, choice: str) -> VariantRecord | None:
    if choice == "none":
        return None
    others = [r for r in records if _shippable(r) and r.variant != primary.variant]
    if choice not in ("auto", "baseline"):
        named = [r for r in records if r.variant == choice]
        if not named:
            raise NotFoundError(
                f"no variant {choice!r} to fall back on (variants: {', '.join(r.variant for r in records)})"
            )
        _check_shippable(named[0])
        return named[0]
    baseline = next((r for r in others if r.is_baseline), None)
    plain = [r for r in others if all(step.name.startswith("export.") for step in r.steps)]
    picked = baseline or (plain[0] if plain else None)
    if picked is None:
        logger.info("no ONNX baseline or fp32 export besides %s: the bundle has no fallback", primary.variant)
    else:
        _check_shippable(picked)
    return picked


# ------------------------------------------------------------------------------------------- assembling


def _assemble(root: Path, chosen: _Chosen, options: _Options) -> BundleManifest:
    record, recipe = chosen.record, chosen.recipe
    dataset = _dataset(recipe)
    settings = _write_model(root, "model", record)
    runtime, metadata = load_runtime(root / "model" / "model.onnx", settings)
    quantized = _quantized(record)
    golden = golden_set(runtime, dataset, quantized=quantized)
    save_npz(root / "golden" / "inputs.npz", golden.inputs)
    save_npz(root / "golden" / "outputs.npz", golden.outputs)
    baseline = drift_baseline(runtime, dataset, recipe.measure.eval_batch_size)
    (root / "drift").mkdir()
    (root / "drift" / "baseline.json").write_text(baseline.model_dump_json())
    slo = derive_slo(
        record,
        sla=_sla(chosen.run_dir, record.variant),
        constraints=recipe.constraints,
        p99_budget_ms=options.p99_budget_ms,
        error_rate_max=options.error_rate_max,
    )
    slo["psi_warning"] = baseline.psi_warning
    slo["server_rss_mb"] = _rss_mb(record)
    fallback = _write_fallback(root, chosen.fallback, golden.inputs, slo) if chosen.fallback else None
    (root / "requirements.txt").write_text(requirements_text(pinned_requirements()))
    _vendor(root / "vendor")
    document = manifest_document(
        name=options.name,
        version=options.version,
        metadata=metadata,
        source=source_section(chosen.envelope, record),
        record=record,
        slo=slo,
        golden=GoldenSpec(
            inputs="golden/inputs.npz", outputs="golden/outputs.npz", rtol=golden.rtol, atol=golden.atol
        ).model_dump(),
        drift_baseline="drift/baseline.json",
        fallback=fallback,
    )
    render_deployment(root, document, settings, options.deploy, signer=options.signer)
    return seal(root, document)


def _dataset(recipe: Recipe) -> Dataset:
    dataset = load_dataset(recipe.data, recipe.model)
    return dataset.take(recipe.data.limit) if recipe.data.limit else dataset


def _write_model(root: Path, folder: str, record: VariantRecord) -> ServingConfig:
    """Copy the artifact and write its serving.json (as measured, without any secret)."""
    if record.artifact is None:  # _check_shippable let it through: never, but the type says it could
        raise UsageError(f"variant {record.variant!r} has no artifact")
    (root / folder).mkdir(parents=True)
    shutil.copyfile(resolve_recorded_path(record.artifact.path, cache_dir()), root / folder / "model.onnx")
    if not isinstance(record.serving, ServingConfig):  # an endpoint measured elsewhere has no artifact either
        raise UsageError(f"variant {record.variant!r} was served at {record.serving.url}: nothing to ship")
    settings = record.serving.model_copy(update={"auth_token": None})
    target = root / ("serving.json" if folder == "model" else f"{folder}/serving.json")
    target.write_text(json.dumps(settings.model_dump(mode="json", exclude={"auth_token"}), indent=2) + "\n")
    return settings


def _write_fallback(root: Path, record: VariantRecord, inputs: dict[str, Any], slo: dict[str, Any]) -> dict[str, Any]:
    settings = _write_model(root, "fallback", record)
    runtime, _ = load_runtime(root / "fallback" / "model.onnx", settings)
    outputs = runtime.infer(inputs)
    save_npz(root / "golden" / "fallback-outputs.npz", outputs)
    rtol, atol = tolerances(outputs, quantized=_quantized(record))
    timeout_s = max(MIN_PRIMARY_TIMEOUT_S, PRIMARY_TIMEOUT_BUDGETS * float(slo["latency_budget_ms_p99"]) / 1000)
    golden = GoldenSpec(inputs="golden/inputs.npz", outputs="golden/fallback-outputs.npz", rtol=rtol, atol=atol)
    spec = FallbackSpec(
        variant=record.variant,
        artifact="fallback/model.onnx",
        serving="fallback/serving.json",
        primary_timeout_s=round(timeout_s, 3),
        golden=golden,
    )
    return spec.model_dump()


def _quantized(record: VariantRecord) -> bool:
    return any(entry.step.startswith("quantize.") for entry in record.lineage)


def _sla(run_dir: RunDir, variant: str) -> dict[str, Any] | None:
    """The SLA search outcome the run wrote for this variant (``load/<variant>.json``), if any."""
    sla = run_dir.read_load_details([variant]).get(variant, {}).get("sla")
    return sla if isinstance(sla, dict) else None


def _rss_mb(record: VariantRecord) -> float | None:
    figures = [m.resources.get("server_rss_mb_max") for m in record.measurements]
    found = [float(f) for f in figures if f is not None]
    return max(found) if found else None


def _vendor(target: Path) -> None:
    """The harness's own source, so the bundle runs with PYTHONPATH=vendor and no install of the lab."""
    source = Path(serving_harness.__file__).parent
    shutil.copytree(source, target / "serving_harness", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


# --------------------------------------------------------------------------------------------- archive


def write_archive(directory: Path) -> Path:
    """``<directory>.tar.gz`` with sorted members, mtime 0 and root ownership: reproducible bytes."""
    archive = directory.parent / f"{directory.name}.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in [directory, *sorted(directory.rglob("*"))]:
            info = tar.gettarinfo(str(path), arcname=(Path(directory.name) / path.relative_to(directory)).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with path.open("rb") as member:
                    tar.addfile(info, member)
            else:
                tar.addfile(info)
    with archive.open("wb") as target, gzip.GzipFile(fileobj=target, mode="wb", mtime=0, filename="") as zipped:
        zipped.write(buffer.getvalue())
    return archive
