"""The report store: ``reports/<recipe>/<run-id>/``, append-only, every file written atomically.

``RunDir`` owns a run's folder: every file name, every read and every write goes through it.

    run.json            the envelope; replaced (atomically) while the run is in progress
    variants/<v>.json   one record per finished variant; written once
    load/<v>.json       a served variant's details (windows, server breakdown, SLA search);
                        replaced only until the variant's record is written
    load/<v>/           the server's log and Locust's records of that variant
    results.parquet     a row per variant × measured case; replaced only until the run is complete
    report.md, .html    renderings of the files above; written only when missing

Run ids are numbered and dated (``0003-20261123T201500Z``) and never reused (after
pytest-benchmark's storage).

**A finished run is never rewritten.** Its data files are what was measured; its renderings are what
the run said when it finished. A rendering is therefore written only when it is missing (a run
from an older workbench, or one whose plots failed), and a different rendering (another price,
another template) goes elsewhere (``write_report_html(run, out=...)``, ``workbench report open
--out FILE``). We chose "missing only, else elsewhere" over "re-render in place" because a page that
changes after the fact no longer says what the run decided, and a committed baseline would change
under review.

**A file that is there but unreadable** (bad JSON, a parquet file cut short, bytes that are not
UTF-8) raises ``CorruptRunError`` naming the file and the problem, never a traceback. A load
details file is the one exception: it only adds detail, so a broken one is logged and skipped.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from workbench.errors import CorruptRunError, NotFoundError, UsageError
from workbench.host import environment
from workbench.report.schema import SCHEMA_VERSION, RunEnvelope, RunStatus, VariantRecord, migrate
from workbench.report.table import records_to_frame

__all__ = [
    "BASELINE_DIR",
    "HTML_FILE",
    "LOAD_DIR",
    "MARKDOWN_FILE",
    "RESULTS_FILE",
    "RUN_FILE",
    "VARIANTS_DIR",
    "ReportStore",
    "RunDir",
    "atomic_write",
]

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
VARIANTS_DIR = "variants"
RESULTS_FILE = "results.parquet"
LOCK_FILE = ".lock"  # flock-ed by the one process writing the run; holds that process's pid
LOAD_DIR = "load"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
BASELINE_DIR = "baseline"  # reports/<recipe>/baseline: the run a CI gate compares against (gate.baseline promotes)
FINISHED: frozenset[RunStatus] = frozenset({"complete"})  # interrupted and failed runs may still be resumed
_RUN_ID = re.compile(r"^(\d{4,})-(\d{8}T\d{6}Z)$")


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


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist") from None
    except OSError as exc:
        raise CorruptRunError(path, f"cannot be read ({exc.strerror or exc})") from None


def _corrupt(path: Path, exc: Exception) -> CorruptRunError:
    """One line: the file and what is wrong with it (pydantic's first error only)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        problem = f"not a valid record: {where}: {first.get('msg')}" if where else str(first.get("msg"))
    else:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return CorruptRunError(path, problem)


@dataclass(frozen=True)
class RunDir:
    """One run's folder: its file names, reads and writes."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def recipe_name(self) -> str:
        return self.path.parent.name

    @property
    def label(self) -> str:
        """``recipe/run-id``, how commands name the run."""
        return f"{self.recipe_name}/{self.run_id}"

    # ------------------------------------------------------------------------------------------- names

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def markdown_path(self) -> Path:
        return self.path / MARKDOWN_FILE

    @property
    def html_path(self) -> Path:
        return self.path / HTML_FILE

    @property
    def load_dir(self) -> Path:
        return self.path / LOAD_DIR

    @property
    def lock_path(self) -> Path:
        """The file the process writing this run holds an exclusive ``flock`` on (its pid inside)."""
        return self.path / LOCK_FILE

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on the run's lock file while this process writes the run.

        The kernel drops the lock when the process ends, however it ends (kill -9 included), so a dead
        writer never blocks a resume; the file keeps the writer's pid for the message. Children do not
        inherit it (Python opens files close-on-exec).
        """
        with self.lock_path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self.writer_pid()
                raise UsageError(
                    f"run {self.recipe_name}/{self.run_id} is being written by process {holder or '(unknown)'}: "
                    "wait for it to end, or stop it first"
                ) from None
            handle.truncate(0)
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            yield

    def writer_pid(self) -> int | None:
        """The pid of the process writing this run now, or None when no process holds its lock (a run
        whose status says ``running`` while none does was killed: ``--resume`` finishes it)."""
        if not self.lock_path.exists():
            return None
        with self.lock_path.open("r") as handle:  # read-only: a reader never creates or changes a run's files
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = handle.read().strip()
                return int(text) if text.isdigit() else 0
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None

    def variant_path(self, variant: str) -> Path:
        return self.path / VARIANTS_DIR / f"{_safe(variant)}.json"

    def load_details_path(self, variant: str) -> Path:
        return self.load_dir / f"{_safe(variant)}.json"

    def load_workdir(self, variant: str) -> Path:
        """Where the server's log and Locust's records of ``variant`` go (not copied into a baseline)."""
        return self.load_dir / _safe(variant)

    # --------------------------------------------------------------------------------------- envelope

    def read_envelope(self) -> RunEnvelope:
        data = _read_bytes(self.run_file)
        try:
            document = orjson.loads(data)
            if not isinstance(document, dict):
                raise ValueError(f"expected a JSON object, found {type(document).__name__}")
            return RunEnvelope.model_validate(migrate(document))
        except ValueError as exc:  # bad JSON, not UTF-8, or not an envelope (pydantic's errors are ValueErrors)
            raise _corrupt(self.run_file, exc) from None

    def start(self, spec_hash: str, recipe: dict[str, Any]) -> RunEnvelope:
        """Write a new run's ``run.json`` (status ``running``, this machine's environment) and return it."""
        from workbench import __version__  # the package's version; imported here, the package imports this module

        envelope = RunEnvelope(
            run_id=self.run_id,
            recipe_name=self.recipe_name,
            spec_hash=spec_hash,
            created=datetime.now(UTC),
            workbench_version=__version__,
            environment=environment(),
            recipe=recipe,
        )
        self.write_envelope(envelope)
        return envelope

    def write_envelope(self, envelope: RunEnvelope) -> None:
        atomic_write(self.run_file, envelope.model_dump_json(indent=2).encode(), overwrite=True)

    def set_status(self, status: RunStatus, summary: dict[str, Any] | None = None) -> None:
        """Mark the run finished with ``status`` (and its summary, when given)."""
        update: dict[str, Any] = {"status": status, "finished": datetime.now(UTC)}
        if summary is not None:
            update["summary"] = summary
        self.write_envelope(self.read_envelope().model_copy(update=update))

    def is_finished(self) -> bool:
        return self.read_envelope().status in FINISHED

    # --------------------------------------------------------------------------------------- variants

    def write_variant(self, record: VariantRecord) -> None:
        atomic_write(self.variant_path(record.variant), record.model_dump_json(indent=2).encode())

    def read_variants(self) -> list[VariantRecord]:
        """Every finished variant's record, in the order they were written, migrated to this schema."""
        folder = self.path / VARIANTS_DIR
        files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns) if folder.exists() else []
        version = self._stored_version() if files else SCHEMA_VERSION
        return [self._read_variant(f, version) for f in files]

    def finished_variants(self) -> set[str]:
        return {record.variant for record in self.read_variants()}

    def _read_variant(self, path: Path, version: int) -> VariantRecord:
        data = _read_bytes(path)
        try:
            document = orjson.loads(data)
            if not isinstance(document, dict):
                raise ValueError(f"expected a JSON object, found {type(document).__name__}")
            return VariantRecord.model_validate(migrate(document, kind="variant", version=version))
        except ValueError as exc:
            raise _corrupt(path, exc) from None

    def _stored_version(self) -> int:
        """The schema version the run's files were written in (a variant record carries none of its own);
        a folder without ``run.json`` holds records of this workbench."""
        if not self.run_file.exists():
            return SCHEMA_VERSION
        data = _read_bytes(self.run_file)
        try:
            document = orjson.loads(data)
        except ValueError as exc:
            raise _corrupt(self.run_file, exc) from None
        return int(document.get("schema_version", 1)) if isinstance(document, dict) else SCHEMA_VERSION

    # ---------------------------------------------------------------------------------------- results

    @property
    def has_results(self) -> bool:
        return self.results_path.exists()

    def read_results(self) -> pd.DataFrame:
        """``results.parquet``; rebuilt from the variant records while the run has not written it yet."""
        if not self.has_results:
            return records_to_frame(self.run_id, self.read_variants())
        try:
            frame = pd.read_parquet(self.results_path)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise _corrupt(self.results_path, exc) from None
        return _migrate_results(frame)

    def write_results(self, frame: pd.DataFrame) -> None:
        """Write the results table; replaced while the run is in progress (a resumed run adds variants)."""
        self._refuse_if_finished(self.results_path)
        atomic_write(self.results_path, frame.to_parquet(index=False), overwrite=True)

    # ------------------------------------------------------------------------------------ load details

    def write_load_details(self, variant: str, details: dict[str, Any]) -> None:
        """``load/<variant>.json``; replaced only until the variant's record is written (a resumed
        variant is measured again), never after."""
        if self.variant_path(variant).exists():
            raise FileExistsError(f"{self.load_details_path(variant)}: variant {variant} is finished")
        data = orjson.dumps(details, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
        atomic_write(self.load_details_path(variant), data, overwrite=True)

    def read_load_details(self, variants: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``load/<variant>.json`` for each served variant that has one.

        A details file names its variant (``"variant"``), or is named after it (the raw id or the
        file-safe one). A broken one is logged and skipped: details add to a report, they are not it.
        """
        if not self.load_dir.is_dir():
            return {}
        names = list(variants)
        by_stem = {stem: v for v in names for stem in (v, _safe(v))}
        found: dict[str, dict[str, Any]] = {}
        for path in sorted(self.load_dir.glob("*.json")):
            data = _details(path)
            named = data.get("variant")
            variant = named if named in names else by_stem.get(path.name.removesuffix(".json"))
            if variant is not None:
                found[str(variant)] = data
        return found

    # ------------------------------------------------------------------------------------- renderings

    def write_markdown(self, text: str) -> bool:
        """Write ``report.md`` when it is missing; False (nothing written) when it is there."""
        return _write_missing(self.markdown_path, text.encode())

    def write_html(self, text: str) -> bool:
        """Write ``report.html`` when it is missing; False (nothing written) when it is there."""
        return _write_missing(self.html_path, text.encode())

    def _refuse_if_finished(self, path: Path) -> None:
        if path.exists() and self.is_finished():
            raise FileExistsError(f"{path}: the run is complete and a finished run is never rewritten")


def _migrate_results(frame: pd.DataFrame) -> pd.DataFrame:
    """A v1 ``results.parquet`` named the measured case ``step``; schema 2 calls it ``case``."""
    if "step" in frame.columns and "case" not in frame.columns:
        return frame.rename(columns={"step": "case"})
    return frame


def _safe(variant: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,@-]", "_", variant)


def _write_missing(path: Path, data: bytes) -> bool:
    try:
        atomic_write(path, data)
    except FileExistsError:
        return False
    return True


def _details(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, ValueError) as exc:  # a details file cut short: the report goes on without its detail
        logger.warning("%s: unreadable load details (%s); left out", path, str(exc).splitlines()[0])
        return {}
    return data if isinstance(data, dict) else {}


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
        """Every numbered run, readable or not (``report list`` marks the unreadable ones)."""
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
            return max(runs, key=_created)
        matches = [r for r in runs if ref in (r.run_id, r.label)]
        matches = matches or [r for r in runs if r.run_id.startswith(ref) or r.label.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(r.label for r in runs[-5:]) or "none yet"
        why = "is ambiguous" if matches else "is not a run"
        raise NotFoundError(f"{ref!r} {why} under {self.root}/ (latest: {known})")

    def find_resumable(self, recipe_name: str, spec_hash: str) -> RunDir | None:
        """The newest unfinished run of this exact recipe, if any (an unreadable one cannot be resumed)."""
        for run in reversed(self.runs(recipe_name)):
            try:
                envelope = run.read_envelope()
            except CorruptRunError as exc:
                logger.warning("not resumable: %s", exc)
                continue
            if envelope.spec_hash == spec_hash and envelope.status != "complete":
                return run
        return None

    @staticmethod
    def _number(name: str) -> int:
        match = _RUN_ID.match(name)
        return int(match.group(1)) if match else 0


def _created(run: RunDir) -> datetime:
    """When the run started: its envelope's word, or the stamp in its id when run.json is unreadable
    (so a broken newest run is still 'latest', and says so, rather than silently passing for an older one)."""
    try:
        return run.read_envelope().created
    except CorruptRunError:
        match = _RUN_ID.match(run.run_id)
        stamp = match.group(2) if match else "19700101T000000Z"
        return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
