from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from workbench.errors import NotFoundError
from workbench.report.rundir import ReportStore, atomic_write
from workbench.report.schema import RunEnvelope, VariantRecord


def envelope(run_id: str, spec_hash: str = "abc", status: str = "running") -> RunEnvelope:
    return RunEnvelope(
        run_id=run_id,
        recipe_name="r",
        spec_hash=spec_hash,
        created=datetime.now(UTC),
        workbench_version="0",
        environment={},
        recipe={},
        status=status,  # type: ignore[arg-type]
    )


def test_run_ids_are_numbered_and_never_reused(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    first, second = store.new_run("r", now), store.new_run("r", now)
    assert first.run_id == "0001-20260102T030405Z"
    assert second.run_id == "0002-20260102T030405Z"


def test_atomic_write_is_append_only(tmp_path: Path) -> None:
    target = tmp_path / "a" / "f.json"
    atomic_write(target, b"one")
    with pytest.raises(FileExistsError):
        atomic_write(target, b"two")
    assert target.read_bytes() == b"one"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]  # no temp files left behind


def test_find_by_id_prefix_path_and_latest(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    run = store.new_run("r")
    run.write_envelope(envelope(run.run_id))
    assert store.find(run.run_id).path == run.path
    assert store.find("r/0001").path == run.path
    assert store.find(str(run.path)).path == run.path
    assert store.find("latest").path == run.path
    with pytest.raises(NotFoundError, match="is not a run"):
        store.find("nope")


def test_resumable_run_matches_spec_hash_and_status(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    done = store.new_run("r")
    done.write_envelope(envelope(done.run_id, status="complete"))
    open_run = store.new_run("r")
    open_run.write_envelope(envelope(open_run.run_id, status="interrupted"))
    assert store.find_resumable("r", "abc") == open_run
    assert store.find_resumable("r", "other") is None


def test_variant_records_round_trip(tmp_path: Path) -> None:
    run = ReportStore(tmp_path).new_run("r")
    record = VariantRecord(
        variant="ort@t=1",
        pipeline="ort",
        is_baseline=False,
        steps=[],
        serving={},
        serving_label="ort t1",
        runtime="onnxruntime",
        status="failed",
        reason="boom",
    )
    run.write_variant(record)
    assert run.read_variants() == [record]
    assert run.finished_variants() == {"ort@t=1"}
