"""The committed baseline of a recipe: ``reports/<recipe>/baseline/``, a copy of one complete run.

``promote`` copies the run's files (its run.json keeps the environment it was measured in, so the
gate can warn when a candidate ran somewhere else) plus ``baseline.json`` saying where it came
from. The per-request load records under ``load/*/`` are left out: they are large and the gate
reads only the per-trial figures. A previous baseline is replaced in one rename.

Example::

    path = promote("digits-cpu/0007-20261123T201500Z", reports=Path("reports"))
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from workbench.errors import CorruptRunError, UsageError
from workbench.report.rundir import BASELINE_DIR, ReportStore, RunDir

__all__ = ["BASELINE_DIR", "PROMOTED_FILE", "Promotion", "promote"]

PROMOTED_FILE = "baseline.json"


@dataclass(frozen=True)
class Promotion:
    """Where the baseline now is, what it came from, and the run it replaced (if any)."""

    path: Path
    source: RunDir
    replaced: str | None


def promote(run_ref: str, *, reports: Path) -> Promotion:
    """Copy a complete run to ``reports/<recipe>/baseline`` (replacing the one there)."""
    run = ReportStore(reports).find(run_ref)
    envelope = run.read_envelope()
    if run.path.name == BASELINE_DIR:
        raise UsageError(f"{run.path} is a baseline already; promote a run")
    if envelope.status != "complete":
        raise UsageError(f"run {run.run_id} is {envelope.status}; promote a complete run (`workbench run --resume`)")
    target = run.path.parent / BASELINE_DIR
    staging = Path(tempfile.mkdtemp(prefix=".baseline-", dir=run.path.parent)) / BASELINE_DIR
    shutil.copytree(run.path, staging, ignore=_skip_load_records(run))
    provenance = {"run_id": run.run_id, "source": str(run.path), "promoted": datetime.now(UTC).isoformat()}
    (staging / PROMOTED_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    replaced = _previous_run_id(target)
    _swap(staging, target)
    return Promotion(path=target, source=run, replaced=replaced)


def _skip_load_records(run: RunDir) -> Callable[[str, list[str]], list[str]]:
    def ignore(folder: str, names: list[str]) -> list[str]:
        if Path(folder) == run.load_dir:
            return [name for name in names if (Path(folder) / name).is_dir()]
        return []

    return ignore


def _previous_run_id(target: Path) -> str | None:
    previous = RunDir(target)
    if not previous.run_file.exists():
        return None
    try:
        return str(previous.read_envelope().run_id)
    except CorruptRunError:  # replacing a broken baseline is what promote is for
        return "an unreadable baseline"


def _swap(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; the old baseline is moved aside first, then removed."""
    holder = staging.parent
    if target.exists():
        target.replace(holder / "old")
    staging.replace(target)
    shutil.rmtree(holder, ignore_errors=True)
