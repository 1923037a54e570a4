"""A run never lies about its state: however it ends, run.json says how, and its children end with it.

Each test starts the real `workbench run` command as a subprocess on the digits model (one variant,
short measurements) and ends it the hard way: a missing data file, a bug, SIGTERM or SIGKILL in the
middle of a served load step, a second writer.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from run_support import SHORT_MEASURE

ROOT = Path(__file__).parents[2]
RECIPE = ROOT / "recipes" / "digits-cpu.yaml"
FAST = [
    *SHORT_MEASURE,
    "measure.batch_sizes=[1]",
    "search.baseline=null",
    "load.enabled=false",
]
# A load step that lasts far longer than any test waits: its warm-up alone is a minute.
LONG_LOAD = (
    "load={enabled: true, profile: {kind: concurrency, users: [1], warmup_s: 60, window_s: 1,"
    " min_windows: 3, max_windows: 4, min_requests: 10}}"
)
ORT_FP32 = "search.pipelines={ort-fp32: [export.onnx]}"
CHILD_EXIT_S = 5.0  # how long children may take to go once the run has ended


def run_args(reports: Path, *overrides: str) -> list[str]:
    sets = [arg for value in (*FAST, *overrides) for arg in ("--set", value)]
    return [sys.executable, "-m", "workbench.cli", "run", str(RECIPE), "--reports", str(reports), *sets]


def cli(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=240, env=env)


def only_envelope(reports: Path) -> dict[str, object]:
    (run_json,) = reports.glob("digits-cpu/*/run.json")
    document: dict[str, object] = json.loads(run_json.read_text())
    return document


def report_show(reports: Path) -> subprocess.CompletedProcess[str]:
    return cli([sys.executable, "-m", "workbench.cli", "report", "show", "latest", "--reports", str(reports)], reports)


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    return tmp_path / "reports"


# ------------------------------------------------------------------------------------ errors


@pytest.mark.slow  # a real run or served load step: `make test` runs it, `make test-fast` skips it
def test_failure_before_the_first_variant_is_recorded_and_shown(reports: Path, tmp_path: Path) -> None:
    result = cli(run_args(reports, ORT_FP32, "data={source: npz, path: nowhere.npz}"), tmp_path)

    assert result.returncode == 2 and "nowhere.npz" in result.stderr and "Traceback" not in result.stderr
    envelope = only_envelope(reports)
    assert envelope["status"] == "failed" and envelope["finished"]
    assert "nowhere.npz" in str(envelope["summary"]["error"])  # type: ignore[index]
    shown = report_show(reports)
    assert shown.returncode == 1
    assert "failed" in shown.stdout and "nowhere.npz" in shown.stdout


BUGGY_METRIC = '''
import builtins, os

calls = []


def metric(outputs, reference, labels):
    """Scores the fp32 baseline, then raises what WB_TEST_ERROR names: a bug, or a real failure."""
    calls.append(1)
    if len(calls) > 1:
        raise getattr(builtins, os.environ["WB_TEST_ERROR"])("the metric broke")
    return 1.0
'''


def with_buggy_metric(tmp_path: Path, error: str) -> dict[str, str]:
    (tmp_path / "buggy_metric.py").write_text(BUGGY_METRIC)
    return {**os.environ, "PYTHONPATH": str(tmp_path), "WB_TEST_ERROR": error}


def test_a_programming_error_stops_the_run_with_its_traceback(reports: Path, tmp_path: Path) -> None:
    args = run_args(reports, "search.pipelines={torch-eager: [], ort-fp32: [export.onnx]}")
    result = cli(
        [*args, "--set", "data.metric=buggy_metric:metric"], tmp_path, with_buggy_metric(tmp_path, "TypeError")
    )

    assert result.returncode == 1
    assert "Traceback" in result.stderr and "TypeError: the metric broke" in result.stderr
    envelope = only_envelope(reports)
    assert envelope["status"] == "failed"
    assert envelope["summary"]["error"] == "TypeError: the metric broke"  # type: ignore[index]
    assert not list(reports.glob("digits-cpu/*/variants/*.json"))  # no variant was passed off as failed


def test_a_real_failure_fails_its_variant_and_the_sweep_goes_on(reports: Path, tmp_path: Path) -> None:
    args = run_args(reports, "search.pipelines={torch-eager: [], ort-fp32: [export.onnx]}")
    result = cli(
        [*args, "--set", "data.metric=buggy_metric:metric"], tmp_path, with_buggy_metric(tmp_path, "RuntimeError")
    )

    assert result.returncode == 0, result.stderr
    assert only_envelope(reports)["status"] == "complete"
    records = [json.loads(p.read_text()) for p in reports.glob("digits-cpu/*/variants/*.json")]
    assert sorted(r["variant"] for r in records) == ["ort-fp32", "torch-eager"]
    assert all(r["status"] == "failed" and r["reason"] == "RuntimeError: the metric broke" for r in records)


# ------------------------------------------------------------------------- resume and the lock


@pytest.mark.slow  # a real run or served load step: `make test` runs it, `make test-fast` skips it
def test_resuming_a_complete_run_rewrites_nothing(reports: Path, tmp_path: Path) -> None:
    args = run_args(reports, "search.pipelines={torch-eager: []}")
    assert cli(args, tmp_path).returncode == 0
    (run,) = reports.glob("digits-cpu/*")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()}

    again = cli([*args, "--resume", "--run", run.name], tmp_path)

    assert again.returncode == 0, again.stderr
    assert "is complete: nothing to do" in again.stderr
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.slow  # a real run or served load step: `make test` runs it, `make test-fast` skips it
def test_a_second_writer_is_refused_by_name(reports: Path, tmp_path: Path) -> None:
    args = run_args(reports, ORT_FP32, "data={source: npz, path: nowhere.npz}")
    cli(args, tmp_path)  # leaves a failed, resumable run
    (run,) = reports.glob("digits-cpu/*")
    with (run / ".lock").open("a+") as held:  # another writer (this process) holds the run
        fcntl.flock(held, fcntl.LOCK_EX)
        held.truncate(0)
        held.write(f"{os.getpid()}\n")
        held.flush()
        refused = cli([*args, "--resume"], tmp_path)

    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"is being written by process {os.getpid()}" in refused.stderr
    assert only_envelope(reports)["status"] == "failed"  # the refused writer changed nothing


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_marks_the_run_interrupted_and_says_how_to_resume(reports: Path, tmp_path: Path) -> None:
    args = run_args(reports, "search.pipelines={torch-eager: []}", "measure.trials=1000")
    with (tmp_path / "stderr.txt").open("wb") as stderr:
        # A shell's background job (`make test &`, nohup) inherits SIGINT ignored, and Python keeps an ignored
        # SIGINT ignored: give the run Ctrl-C as a terminal would, whoever started these tests.
        process = subprocess.Popen(
            args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr, preexec_fn=_sigint_default
        )
    deadline = time.monotonic() + 120
    while not list(reports.glob("digits-cpu/*/run.json")) and time.monotonic() < deadline:
        time.sleep(0.1)

    process.send_signal(signal.SIGINT)

    assert process.wait(timeout=60) == 130
    (run,) = reports.glob("digits-cpu/*")
    message = (tmp_path / "stderr.txt").read_text()
    assert f"interrupted: run digits-cpu/{run.name}" in message
    assert f"--resume --run digits-cpu/{run.name}" in message
    assert only_envelope(reports)["status"] == "interrupted"


# --------------------------------------------------------------------- signals in a load step


def children_once_loading(
    process: subprocess.Popen[bytes], workers: int, timeout_s: float = 180
) -> list[psutil.Process]:
    """The run's children once the harness and every Locust process are up (the load step has begun)."""
    parent = psutil.Process(process.pid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        children = parent.children(recursive=True)
        lines = [" ".join(_cmdline(c)) for c in children]
        locusts = [line for line in lines if "-m locust" in line]
        if any("serving_harness" in line for line in lines) and len(locusts) == 1 + workers:
            return children
        time.sleep(0.2)
    raise AssertionError(f"no load step began (run exited {process.poll()})")


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def survivors(children: list[psutil.Process], within_s: float = CHILD_EXIT_S) -> list[str]:
    """Children still running after ``within_s`` (a zombie has exited: only its parent has not reaped it)."""
    _, alive = psutil.wait_procs(children, timeout=within_s)
    return [" ".join(_cmdline(p))[:120] for p in alive if _running(p)]


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def started(reports: Path, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Runs started by a test; any still going at its end are killed."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def start_loading_run(
    reports: Path, cwd: Path, started: list[subprocess.Popen[bytes]], workers: int
) -> subprocess.Popen[bytes]:
    """`workbench run` of one variant with a long served load step; its stderr goes to cwd/stderr.txt
    (a file, not a pipe nobody reads while it runs)."""
    args = run_args(reports, ORT_FP32, LONG_LOAD, f"load.workers={workers}")
    with (cwd / "stderr.txt").open("wb") as stderr:
        process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr)
    started.append(process)
    return process


@pytest.mark.slow
def test_sigterm_in_a_load_step_stops_children_and_marks_the_run_interrupted(
    reports: Path, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    process = start_loading_run(reports, tmp_path, started, workers=0)
    children = children_once_loading(process, workers=0)

    second = cli([*run_args(reports, ORT_FP32, LONG_LOAD, "load.workers=0"), "--resume"], tmp_path)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    stderr = (tmp_path / "stderr.txt").read_text()

    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"is being written by process {process.pid}" in second.stderr
    assert process.returncode == 128 + signal.SIGTERM
    assert "interrupted" in stderr and "--resume --run digits-cpu/" in stderr
    assert survivors(children) == []
    envelope = only_envelope(reports)
    assert envelope["status"] == "interrupted" and envelope["summary"] == {"stopped_by": "SIGTERM"}


@pytest.mark.slow
def test_sigkill_in_a_load_step_leaves_no_child_behind(
    reports: Path, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    process = start_loading_run(reports, tmp_path, started, workers=1)  # a Locust master and its worker
    children = children_once_loading(process, workers=1)

    process.kill()
    process.wait(timeout=30)

    assert survivors(children) == []
    assert only_envelope(reports)["status"] == "running"  # nobody could write it: show says what happened
    shown = report_show(reports)
    assert "no process is writing it" in shown.stdout and "--resume --run digits-cpu/" in shown.stdout
