"""A run with a broken file (bad JSON, a parquet file cut short, bytes that are not UTF-8): `report list`
still lists every run and marks the broken one; the commands that need the file exit 2 with one line
naming it, never a traceback. The runs are copies of the golden digits run, broken the way a full disk
or a bad copy breaks them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from report_support import GOLDEN_RUN, run_cli

from workbench.report.rundir import RunDir

FIRST, SECOND = "0001-20261201T000000Z", "0002-20261202T000000Z"  # after the golden run was made


def copy(root: Path, run_id: str) -> RunDir:
    target = root / "digits-cpu" / run_id
    shutil.copytree(GOLDEN_RUN, target)
    return RunDir(target)


def bad_json(run: RunDir) -> Path:
    run.run_file.write_text('{"run_id": "0002-2026120')
    return run.run_file


def cut_parquet(run: RunDir) -> Path:
    data = run.results_path.read_bytes()
    run.results_path.write_bytes(data[: len(data) // 2])
    return run.results_path


def not_utf8(run: RunDir) -> Path:
    path = run.variant_path("ort-fp32")
    path.write_bytes(b"\xff\xfe" + path.read_bytes())
    return path


Breakage = Callable[[RunDir], Path]


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    copy(tmp_path, FIRST)
    copy(tmp_path, SECOND)
    return tmp_path


def test_report_list_marks_the_broken_run_and_lists_the_others(
    reports: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_json(RunDir(reports / "digits-cpu" / SECOND))
    assert run_cli(monkeypatch, "report", "list", "--reports", str(reports)) == 0
    out = capsys.readouterr().out
    assert f"digits-cpu/{FIRST}" in out and "complete" in out
    assert f"digits-cpu/{SECOND}" in out and "unreadable: run.json" in out


COMMANDS: dict[str, list[str]] = {
    "show": ["report", "show", "RUN"],
    "select": ["select", "RUN"],
    "export": ["export", "RUN", "--out", "OUT"],
    "gate": ["gate", "--baseline", "OTHER", "--candidate", "RUN", "--fail", "throughput_rps:-5%"],
    "compare": ["compare", "OTHER", "RUN"],
}
# The files each command reads: a break in one of them must stop it with exit 2.
CASES = [
    *[(command, bad_json) for command in COMMANDS],
    ("show", cut_parquet),
    ("select", cut_parquet),
    *[(command, not_utf8) for command in ("export", "gate", "compare")],
]


@pytest.mark.parametrize(("command", "breakage"), CASES, ids=[f"{c}-{b.__name__}" for c, b in CASES])
def test_a_broken_file_exits_2_with_one_line_naming_it(
    command: str,
    breakage: Breakage,
    reports: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = breakage(RunDir(reports / "digits-cpu" / SECOND))
    swap = {"RUN": f"digits-cpu/{SECOND}", "OTHER": f"digits-cpu/{FIRST}", "OUT": str(tmp_path / "bundle")}
    argv = [swap.get(arg, arg) for arg in COMMANDS[command]]

    code = run_cli(monkeypatch, *argv, "--reports", str(reports))

    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {broken}: unreadable: "), err


def test_latest_is_the_newest_run_even_when_it_is_broken(
    reports: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not silently an older run: `latest` names the broken newest one, and says why it cannot be shown."""
    broken = bad_json(RunDir(reports / "digits-cpu" / SECOND))
    assert run_cli(monkeypatch, "report", "show", "latest", "--reports", str(reports)) == 2
    assert f"{broken}: unreadable" in capsys.readouterr().err
