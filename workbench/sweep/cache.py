"""Run a pipeline of build steps with a content-hash cache, recording lineage (after Olive).

Each step's output is cached under ``<cache>/artifacts/<key>/`` where the key hashes the parent
artifact's content hash, the step name and its validated config. A cached output is reused
without running the step; the lineage entry says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from workbench.artifact import Artifact, LineageEntry, hash_path
from workbench.errors import (
    BuildError,
    MissingDependencyError,
    RecipeError,
    UsageError,
    WorkbenchError,
    is_programming_error,
)
from workbench.recipe.spec import StepSpec
from workbench.steps.base import STEPS, StepConfig, StepContext

logger = logging.getLogger(__name__)
CACHE_FORMAT = 1
ARTIFACT_FILE = "artifact.json"


def validate_step(spec: StepSpec, *, where: str) -> StepConfig:
    """The step's validated Config; unknown steps and bad configs are located RecipeErrors."""
    try:
        step_cls = STEPS.get(spec.name)
    except UsageError as exc:
        raise RecipeError(str(exc), key=where) from None
    try:
        return step_cls.Config.model_validate(spec.config)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join([where, *(str(p) for p in first["loc"])])
        raise RecipeError(f"{spec.name}: {first['msg']}", key=key) from None


def cache_key(parent: Artifact, spec: StepSpec, config: StepConfig, data: str = "") -> str:
    """The build cache key: parent, step, config, and ``data`` (the calibration digest) for steps that read it."""
    payload: dict[str, object] = {
        "v": CACHE_FORMAT,
        "parent": parent.content_hash,
        "step": spec.name,
        "config": config.model_dump(mode="json"),
    }
    if data:
        payload["data"] = data
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def build(source: Artifact, steps: tuple[StepSpec, ...], context: StepContext, cache_root: Path) -> Artifact:
    """Apply ``steps`` in order to ``source``; every intermediate is cached."""
    artifact = source
    for spec in steps:
        artifact = _build_step(artifact, spec, context, cache_root)
    return artifact


def _build_step(parent: Artifact, spec: StepSpec, context: StepContext, cache_root: Path) -> Artifact:
    config = validate_step(spec, where=spec.name)
    uses_calibration = getattr(STEPS.get(spec.name), "uses_calibration", False)
    key = cache_key(parent, spec, config, context.calibration_digest if uses_calibration else "")
    out_dir = cache_root / "artifacts" / key[:2] / key
    started = time.perf_counter()
    cached = _read_cached(out_dir)
    was_cached = cached is not None
    if cached is None:
        cached = _run_step(parent, spec, config, context, out_dir)
    entry = LineageEntry(
        step=spec.name,
        config=config.model_dump(mode="json"),
        parent_hash=parent.content_hash,
        content_hash=cached.content_hash,
        duration_s=round(time.perf_counter() - started, 3),
        cached=was_cached,
    )
    logger.info("%s → %s%s", spec.name, cached.content_hash[:12], " (cached)" if entry.cached else "")
    return replace(cached, lineage=(*parent.lineage, entry), figures={**parent.figures, **cached.figures})


def _run_step(parent: Artifact, spec: StepSpec, config: StepConfig, context: StepContext, out_dir: Path) -> Artifact:
    step = STEPS.get(spec.name)()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name[:12]}-"))
    try:
        made = step.apply(parent, config, workdir / "out", context)
    except (MissingDependencyError, RecipeError):
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        if is_programming_error(exc):  # a bug, not a failed build: it stops the run (see workbench.errors)
            raise
        if isinstance(exc, WorkbenchError):
            raise BuildError(f"{spec.name}: {exc}") from exc
        raise BuildError(f"{spec.name} failed: {type(exc).__name__}: {exc}") from exc
    relative = made.path.relative_to(workdir / "out")
    record = {
        "path": relative.as_posix(),
        "format": made.format,
        "content_hash": hash_path(made.path),
        "figures": made.figures,
    }
    (workdir / "out" / ARTIFACT_FILE).write_text(json.dumps(record))
    with contextlib.suppress(OSError):  # another build won the race; theirs is identical by construction
        (workdir / "out").rename(out_dir)
    shutil.rmtree(workdir, ignore_errors=True)
    loaded = _read_cached(out_dir)
    if loaded is None:
        raise BuildError(f"{spec.name}: the cache entry {out_dir} could not be read back")
    return loaded


def _read_cached(out_dir: Path) -> Artifact | None:
    manifest = out_dir / ARTIFACT_FILE
    if not manifest.exists():
        return None
    record: dict[str, Any] = json.loads(manifest.read_text())
    return Artifact(
        path=out_dir / record["path"],
        format=record["format"],
        content_hash=record["content_hash"],
        figures={k: float(v) for k, v in record.get("figures", {}).items()},
    )
