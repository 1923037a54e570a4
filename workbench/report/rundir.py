"""The report store: ``reports/<recipe>/<run-id>/``, append-only, every file written atomically.

Run ids are numbered and dated (``0003-20261123T201500Z``) and never reused (after
pytest-benchmark's storage). A run's files are written once; only ``run.json`` is replaced while
the run is in progress, and a finished run is never rewritten.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from workbench.errors import NotFoundError
from workbench.report.schema import RunEnvelope, RunStatus, VariantRecord, migrate

RUN_FILE = "run.json"
VARIANTS_DIR = "variants"
RESULTS_FILE = "results.parquet"
_RUN_ID = re.compile(r"^(\d{4,})-\d{8}T\d{6}Z$")


def atomic_write(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` through a temp file and a rename, so readers never see half a file."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists and reports are append-only")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class RunDir:
    """One run's folder."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def recipe_name(self) -> str:
        return self.path.parent.name

    def read_envelope(self) -> RunEnvelope:
        return RunEnvelope.model_validate(migrate(orjson.loads((self.path / RUN_FILE).read_bytes())))

    def write_envelope(self, envelope: RunEnvelope) -> None:
        atomic_write(self.path / RUN_FILE, envelope.model_dump_json(indent=2).encode(), overwrite=True)

    def set_status(self, status: RunStatus, summary: dict[str, Any] | None = None) -> None:
        """Mark the run finished with ``status`` (and its summary, when given)."""
        update: dict[str, Any] = {"status": status, "finished": datetime.now(UTC)}
        if summary is not None:
            update["summary"] = summary
        self.write_envelope(self.read_envelope().model_copy(update=update))

    def variant_path(self, variant: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._=,@-]", "_", variant)
        return self.path / VARIANTS_DIR / f"{safe}.json"

    def write_variant(self, record: VariantRecord) -> None:
        atomic_write(self.variant_path(record.variant), record.model_dump_json(indent=2).encode())

    def read_variants(self) -> list[VariantRecord]:
        folder = self.path / VARIANTS_DIR
        files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns) if folder.exists() else []
        return [VariantRecord.model_validate_json(f.read_bytes()) for f in files]

    def finished_variants(self) -> set[str]:
        return {record.variant for record in self.read_variants()}


class ReportStore:
    """All runs under a root folder (``reports/`` by default)."""

    def __init__(self, root: Path | str = "reports") -> None:
        self.root = Path(root)

    def new_run(self, recipe_name: str, now: datetime | None = None) -> RunDir:
        folder = self.root / recipe_name
        folder.mkdir(parents=True, exist_ok=True)
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        number = 1 + max((self._number(p.name) for p in folder.iterdir()), default=0)
        while True:
            path = folder / f"{number:04d}-{stamp}"
            try:
                path.mkdir()
            except FileExistsError:
                number += 1
                continue
            return RunDir(path)

    def runs(self, recipe_name: str | None = None) -> list[RunDir]:
        folders = [self.root / recipe_name] if recipe_name else sorted(p for p in self.root.glob("*") if p.is_dir())
        # Numbered runs only: a promoted CI baseline (reports/<recipe>/baseline) is found by name, never as 'latest'.
        found = [
            RunDir(p)
            for f in folders
            if f.is_dir()
            for p in f.iterdir()
            if _RUN_ID.match(p.name) and (p / RUN_FILE).exists()
        ]
        return sorted(found, key=lambda r: (r.recipe_name, self._number(r.run_id)))

    def find(self, ref: str) -> RunDir:
        """A run by path, ``recipe/run-id``, run id, unique run-id prefix, or ``latest``."""
        for as_path in (Path(ref), self.root / ref):
            if (as_path / RUN_FILE).exists():
                return RunDir(as_path)
        runs = self.runs()
        if ref == "latest" and runs:
            return max(runs, key=lambda r: r.read_envelope().created)
        matches = [r for r in runs if ref in (r.run_id, f"{r.recipe_name}/{r.run_id}")]
        matches = matches or [
            r for r in runs if r.run_id.startswith(ref) or f"{r.recipe_name}/{r.run_id}".startswith(ref)
        ]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(f"{r.recipe_name}/{r.run_id}" for r in runs[-5:]) or "none yet"
        why = "is ambiguous" if matches else "is not a run"
        raise NotFoundError(f"{ref!r} {why} under {self.root}/ (latest: {known})")

    def find_resumable(self, recipe_name: str, spec_hash: str) -> RunDir | None:
        """The newest unfinished run of this exact recipe, if any."""
        for run in reversed(self.runs(recipe_name)):
            envelope = run.read_envelope()
            if envelope.spec_hash == spec_hash and envelope.status != "complete":
                return run
        return None

    @staticmethod
    def _number(name: str) -> int:
        match = _RUN_ID.match(name)
        return int(match.group(1)) if match else 0
