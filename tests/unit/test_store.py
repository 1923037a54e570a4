from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from serving_harness.config import ServingConfig
from workbench.errors import CorruptRunError, NotFoundError
from workbench.report.rundir import ReportStore, RunDir, atomic_write
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
        serving=ServingConfig(),
        serving_label="ort t1",
        runtime="onnxruntime",
        status="failed",
        reason="boom",
    )
    run.write_variant(record)
    assert run.read_variants() == [record]
    assert run.finished_variants() == {"ort@t=1"}


def finished_run(tmp_path: Path) -> RunDir:
    run = ReportStore(tmp_path).new_run("r")
    run.write_envelope(envelope(run.run_id, status="complete"))
    return run


def test_renderings_are_written_only_when_missing(tmp_path: Path) -> None:
    run = finished_run(tmp_path)
    assert run.write_markdown("first") and run.write_html("<p>first</p>")
    assert not run.write_markdown("second") and not run.write_html("<p>second</p>")
    assert run.markdown_path.read_text() == "first" and run.html_path.read_text() == "<p>first</p>"


def test_a_finished_runs_results_are_never_rewritten(tmp_path: Path) -> None:
    run = ReportStore(tmp_path).new_run("r")
    run.write_envelope(envelope(run.run_id))
    run.write_results(pd.DataFrame({"variant": ["a"]}))
    run.write_results(pd.DataFrame({"variant": ["a", "b"]}))  # in progress: a resumed run adds variants
    run.set_status("complete")
    with pytest.raises(FileExistsError, match="never rewritten"):
        run.write_results(pd.DataFrame({"variant": ["c"]}))
    assert list(run.read_results()["variant"]) == ["a", "b"]


def test_load_details_are_replaced_until_the_variant_is_written(tmp_path: Path) -> None:
    run = ReportStore(tmp_path).new_run("r")
    run.write_load_details("ort@t=1", {"steps": [1]})
    run.write_load_details("ort@t=1", {"steps": [2]})  # measured again after an interrupt
    run.write_variant(VariantRecord(variant="ort@t=1", pipeline="ort", is_baseline=False, steps=[], serving=ServingConfig(),
                                    serving_label="ort", runtime="onnxruntime", status="ok"))  # fmt: skip
    with pytest.raises(FileExistsError):
        run.write_load_details("ort@t=1", {"steps": [3]})
    assert run.read_load_details(["ort@t=1"]) == {"ort@t=1": {"steps": [2]}}


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("run.json", b'{"run_id": ', "unreadable: "),
        ("run.json", b"\xff\xfe{}", "not valid UTF-8"),
        ("results.parquet", b"PAR1 cut short", "unreadable: "),
    ],
)
def test_a_corrupt_file_raises_one_error_naming_it(tmp_path: Path, name: str, data: bytes, problem: str) -> None:
    run = finished_run(tmp_path)
    (run.path / name).write_bytes(data)
    with pytest.raises(CorruptRunError, match=problem) as caught:
        run.read_results() if name.endswith(".parquet") else run.read_envelope()
    assert str(caught.value).startswith(f"{run.path / name}: unreadable: ") and "\n" not in str(caught.value)


def test_a_corrupt_run_is_not_resumed_and_does_not_hide_the_others(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    good = store.new_run("r")
    good.write_envelope(envelope(good.run_id, status="interrupted"))
    broken = store.new_run("r")
    broken.run_file.write_bytes(b"{")
    assert store.runs("r") == [good, broken]
    assert store.find_resumable("r", "abc") == good


def test_one_writer_at_a_time_and_a_dead_writer_is_seen(tmp_path: Path) -> None:
    import multiprocessing

    from typer.testing import CliRunner

    from workbench.cli import app

    run = ReportStore(tmp_path).new_run("r")
    run.write_envelope(envelope(run.run_id))
    with run.writer_lock():
        assert run.writer_pid() == os.getpid()
        # a second writer (another process: flock is per open file) is refused with the holder's pid
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1) as pool:
            message = pool.apply(_try_lock, (str(run.path),))
        assert message is not None and f"process {os.getpid()}" in message
    assert run.writer_pid() is None  # the lock went with its holder; nothing else changed

    listing = CliRunner().invoke(app, ["report", "list", "--reports", str(tmp_path)], env={"COLUMNS": "200"})
    assert "no process is writing it" in listing.output


def _try_lock(path: str) -> str | None:
    from workbench.errors import UsageError

    try:
        with RunDir(Path(path)).writer_lock():
            return None
    except UsageError as exc:
        return str(exc)
