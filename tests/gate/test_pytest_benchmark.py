"""The pytest round trip: the workbench fixture and pytest-benchmark write JSON in a real pytest
session; the gate reads both, with pytest-benchmark's compare-fail syntax (``mean:10%``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.errors import UsageError
from workbench.gate.rules import gate, parse_rule
from workbench.gate.sources import pytest_benchmark_source

BENCHMARKS = """
import os
import numpy as np

MODEL = os.environ["GATE_MODEL"]
WORK = int(os.environ["GATE_WORK"])


def test_model(workbench_benchmark):
    result = workbench_benchmark(MODEL, {"x": np.ones((1, 64), dtype=np.float32)})
    assert result.throughput_rps > 0


def test_function(benchmark):
    benchmark.pedantic(lambda: sum(range(WORK)), rounds=60, iterations=20, warmup_rounds=5)
"""


def run_benchmarks(folder: Path, model: Path, work: int) -> tuple[Path, Path]:
    """One real pytest session: our plugin's JSON and pytest-benchmark's (with per-round data)."""
    folder.mkdir()
    (folder / "test_bench.py").write_text(BENCHMARKS)
    ours, theirs = folder / "workbench.json", folder / "pytest-benchmark.json"
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "workbench.gate.pytest_plugin",
        "--workbench-json", str(ours), "--workbench-trials", "6", "--workbench-trial-s", "0.05",
        "--benchmark-json", str(theirs), "--benchmark-save-data", "test_bench.py",
    ]  # fmt: skip
    env = {**os.environ, "GATE_MODEL": str(model), "GATE_WORK": str(work)}
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "workbench benchmarks" in done.stdout  # the terminal summary
    return ours, theirs


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory, fast_model: Path, slow_model: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sessions")
    base_ours, base_theirs = run_benchmarks(root / "base", fast_model, work=200)
    cand_ours, cand_theirs = run_benchmarks(root / "cand", slow_model, work=2000)
    return {"base_ours": base_ours, "base_theirs": base_theirs, "cand_ours": cand_ours, "cand_theirs": cand_theirs}


def test_the_fixture_writes_pytest_benchmark_json_with_trials(sessions: dict[str, Path]) -> None:
    document = json.loads(sessions["base_ours"].read_text())
    (entry,) = document["benchmarks"]

    assert entry["fullname"] == "test_bench.py::test_model"
    assert entry["stats"]["rounds"] == 6 and len(entry["stats"]["data"]) == 6
    assert len(entry["extra_info"]["samples"]["throughput_rps"]) == 6
    assert document["machine_info"]["cpu"]["brand_raw"]


def test_the_gate_finds_the_slower_model_in_the_fixture_results(sessions: dict[str, Path]) -> None:
    base, cand = pytest_benchmark_source(sessions["base_ours"]), pytest_benchmark_source(sessions["cand_ours"])

    result = gate(base, cand, [parse_rule("mean:10%"), parse_rule("latency_ms_p50:+10%")])

    assert [c.verdict for c in result.checks] == ["regression", "regression"]
    assert result.checks[0].comparison is not None and result.checks[0].comparison.n_candidate == 6
    assert result.exit_code == 1


def test_a_results_file_against_itself_is_within_budget(sessions: dict[str, Path]) -> None:
    same = pytest_benchmark_source(sessions["base_ours"])

    result = gate(same, same, [parse_rule("mean:5%"), parse_rule("ops:-5%")])

    # No change at all; on a busy machine the trials' spread may still be too wide to call it a pass.
    assert all(c.comparison is not None and c.comparison.change == 0 for c in result.checks)
    assert result.count("regression") == 0
    assert result.exit_code == 0 and not result.warnings


def test_the_gate_reads_pytest_benchmark_json_in_blocks_of_rounds(sessions: dict[str, Path]) -> None:
    base, cand = pytest_benchmark_source(sessions["base_theirs"]), pytest_benchmark_source(sessions["cand_theirs"])

    result = gate(base, cand, [parse_rule("mean:10%"), parse_rule("ops:-10%")])

    assert set(base.cases) == {"test_bench.py::test_function"}
    assert [c.verdict for c in result.checks] == ["regression", "regression"]
    comparison = result.checks[0].comparison
    assert comparison is not None and comparison.n_baseline == 20  # 60 rounds in 20 blocks
    assert comparison.change > 1.0  # ten times the work


def test_without_saved_data_only_the_mean_is_compared(sessions: dict[str, Path], tmp_path: Path) -> None:
    stripped = {}
    for side in ("base_theirs", "cand_theirs"):
        document = json.loads(sessions[side].read_text())
        for entry in document["benchmarks"]:
            del entry["stats"]["data"]  # what --benchmark-json writes without --benchmark-save-data
        stripped[side] = tmp_path / f"{side}.json"
        stripped[side].write_text(json.dumps(document))
    base, cand = pytest_benchmark_source(stripped["base_theirs"]), pytest_benchmark_source(stripped["cand_theirs"])

    mean, minimum = gate(base, cand, [parse_rule("mean:10%"), parse_rule("min:10%")]).checks

    assert mean.verdict == "regression" and mean.comparison is not None and mean.comparison.test == "Welch t"
    assert minimum.verdict == "inconclusive" and "--benchmark-save-data" in minimum.reason


def test_a_file_that_is_not_pytest_benchmark_json_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"results": []}')

    with pytest.raises(UsageError, match="not a pytest-benchmark JSON file"):
        pytest_benchmark_source(path)


def test_the_command_line_reads_pytest_benchmark_files(
    sessions: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = tmp_path / "gate.md"
    argv = ["workbench", "gate", "--pytest-benchmark", str(sessions["cand_theirs"]), "--baseline",
            str(sessions["base_theirs"]), "--fail", "mean:10%", "--summary", str(summary)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)

    with pytest.raises(SystemExit) as exited:
        main()

    assert exited.value.code == 1
    assert "test_bench.py::test_function" in capsys.readouterr().out
    assert "| ❌ | test_bench.py::test_function | mean:10% |" in summary.read_text()
