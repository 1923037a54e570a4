"""A whole run on the real digits model: build, gate, measure, report, resume, cache, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from run_support import SHORT_MEASURE

from workbench.recipe.loader import load_recipe
from workbench.recipe.spec import Recipe
from workbench.report.rundir import ReportStore
from workbench.sweep.runner import run_recipe

ROOT = Path(__file__).parents[2]
FAST = [
    *SHORT_MEASURE,
    "measure.batch_sizes=[1, 8]",
    "load.enabled=false",
    # the four pipelines these tests check, whatever else recipes/digits-cpu.yaml grows to hold
    "search.pipelines={torch-eager: [], ort-fp32: [export.onnx],"
    " ort-int8-matmul: [export.onnx, {quantize.ort_dynamic: {per_channel: true, op_types: [MatMul, Gemm]}}],"
    " ort-int8-conv: [export.onnx, {quantize.ort_dynamic: {per_channel: true, op_types: [Conv, MatMul, Gemm]}}]}",
]
SHORT_LOAD = (
    "load={enabled: true, profile: {kind: concurrency, users: [2], warmup_s: 0.3, window_s: 0.5,"
    " min_windows: 3, max_windows: 4, min_requests: 100}}"
)


def digits_recipe(*extra: str) -> Recipe:
    return load_recipe(ROOT / "recipes" / "digits-cpu.yaml", [*FAST, *extra])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reports = tmp_path_factory.mktemp("reports")
    return run_recipe(digits_recipe(), reports=reports).path


def test_run_writes_a_complete_report(finished_run: Path) -> None:
    envelope = ReportStore(finished_run.parents[1]).find(str(finished_run)).read_envelope()
    assert envelope.status == "complete"
    assert envelope.environment["cpu"]["cores_logical"] >= 1
    frame = pd.read_parquet(finished_run / "results.parquet")
    assert set(frame["variant"]) == {"torch-eager", "ort-fp32", "ort-int8-matmul", "ort-int8-conv"}
    ok = frame[frame["status"] == "ok"]
    assert {"torch-eager", "ort-fp32"} <= set(ok["variant"])
    assert (ok["accuracy"] >= 0.97).all()
    assert set(ok["batch_size"]) == {1, 8}
    assert (ok["latency_ms_p50"] > 0).all() and (ok["throughput_rps"] > 0).all()
    fp32 = ok[(ok["variant"] == "ort-fp32")].iloc[0]
    assert fp32["max_abs_diff"] < 1e-3 and fp32["nonfinite"] == 0
    assert envelope.summary["best"] in set(ok["variant"])
    markdown = (finished_run / "report.md").read_text()
    assert "ort-int8-matmul" in markdown and "## Lineage" in markdown


def test_lineage_and_build_cache(finished_run: Path, tmp_path: Path) -> None:
    records = {r.variant: r for r in ReportStore(finished_run.parents[1]).find(str(finished_run)).read_variants()}
    int8 = records["ort-int8-matmul"]
    assert [e.step for e in int8.lineage] == ["export.onnx", "quantize.ort_dynamic"]
    assert int8.lineage[1].parent_hash == int8.lineage[0].content_hash
    again = run_recipe(
        digits_recipe(
            "search.baseline=null",
            "search.pipelines={ort-int8-matmul: [export.onnx, {quantize.ort_dynamic: {per_channel: true, op_types: [MatMul, Gemm]}}]}",
        ),
        reports=tmp_path,
    )
    (record,) = again.read_variants()
    assert all(entry.cached for entry in record.lineage)
    assert record.artifact is not None and record.artifact.content_hash == int8.artifact.content_hash  # type: ignore[union-attr]


def test_failed_step_is_recorded_and_sweep_goes_on(tmp_path: Path) -> None:
    recipe = digits_recipe(
        "search.pipelines={torch-eager: [], broken: [quantize.ort_dynamic], ort-fp32: [export.onnx]}"
    )
    run = run_recipe(recipe, reports=tmp_path)
    records = {r.variant: r for r in run.read_variants()}
    assert records["broken"].status == "failed"
    assert "export.onnx" in (records["broken"].reason or "")
    assert records["ort-fp32"].status == "ok"


@pytest.mark.slow  # a real run or served load step: `make test` runs it, `make test-fast` skips it
def test_served_load_adds_rows_details_and_server_log(tmp_path: Path) -> None:
    recipe = digits_recipe("search.baseline=null", "search.pipelines={ort-fp32: [export.onnx]}", SHORT_LOAD)
    run = run_recipe(recipe, reports=tmp_path)
    frame = pd.read_parquet(run.path / "results.parquet")
    served = frame[frame["mode"] == "served"]
    assert len(served) == 1 and served.iloc[0]["concurrency"] == 2
    row = served.iloc[0]
    assert row["iterations"] >= 100 and 0 < row["latency_ms_p50"] <= row["latency_ms_p99"]
    assert row["error_rate"] == 0 and row["server_batch_size_mean"] >= 1
    assert row["server_compute_ms_mean"] > 0 and row["generator_cpu_percent_max"] > 0
    details = json.loads((run.path / "load" / "ort-fp32.json").read_text())
    assert details["profile"]["kind"] == "concurrency" and details["steps"][0]["windows"]
    assert "ready" in (run.path / "load" / "ort-fp32" / "server.log").read_text().lower()


def test_optuna_search_stays_within_its_budget(tmp_path: Path) -> None:
    run = run_recipe(digits_recipe("search.strategy=optuna", "search.budget=2"), reports=tmp_path)
    records = run.read_variants()
    assert len(records) == 2 and any(r.is_baseline for r in records)
    assert run.read_envelope().summary["best"] in {r.variant for r in records}


def test_latency_bound_missed_in_process_is_not_served(tmp_path: Path) -> None:
    recipe = digits_recipe(
        "search.baseline=null",
        "search.pipelines={ort-fp32: [export.onnx]}",
        SHORT_LOAD,
        "constraints={latency_ms.p50: {max: 0.000001}}",
    )
    (record,) = run_recipe(recipe, reports=tmp_path).read_variants()
    assert record.status == "rejected" and "not served" in (record.reason or "")
    assert record.measurements and all(m.mode == "inprocess" for m in record.measurements)


def test_accuracy_gate_rejects_before_measuring(tmp_path: Path) -> None:
    run = run_recipe(digits_recipe("constraints={accuracy_drop: {max: -1.0}}"), reports=tmp_path)
    records = run.read_variants()
    assert records and all(r.status == "rejected" and not r.measurements for r in records)
    assert "accuracy_drop" in (records[0].reason or "")
    assert run.read_envelope().summary["best"] is None


def test_interrupt_then_resume_skips_finished_variants(tmp_path: Path) -> None:
    recipe = digits_recipe()

    def interrupt_after_first(event: str, payload: dict[str, Any]) -> None:
        if event == "done":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, reports=tmp_path, hook=interrupt_after_first)
    (run,) = ReportStore(tmp_path).runs()
    assert run.read_envelope().status == "interrupted"
    (first,) = run.read_variants()
    first_bytes = run.variant_path(first.variant).read_bytes()

    started: list[str] = []
    resumed = run_recipe(
        recipe, reports=tmp_path, resume=True, hook=lambda e, p: started.append(p["id"]) if e == "variant" else None
    )
    assert resumed.path == run.path
    assert first.variant not in started and len(started) == 3
    assert run.variant_path(first.variant).read_bytes() == first_bytes
    assert resumed.read_envelope().status == "complete"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=240
    )


def test_cli_bad_recipe_is_one_located_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nmodel: {source: example, name: digits}\nsearch: {pipelines: {a: []}}\nmeasure: {trials: lots}\n"
    )
    result = cli("run", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "measure.trials" in lines[0]


@pytest.mark.slow  # a real run, then every report command on it
def test_cli_report_commands(finished_run: Path) -> None:
    reports = finished_run.parents[1]
    listed = cli("report", "list", "--reports", str(reports), cwd=ROOT)
    assert listed.returncode == 0 and finished_run.name in listed.stdout
    shown = cli("report", "show", finished_run.name, "--reports", str(reports), cwd=ROOT)
    assert shown.returncode == 0 and "ort-int8-matmul" in shown.stdout and "best" in shown.stdout
    missing = cli("report", "show", "no-such-run", "--reports", str(reports), cwd=ROOT)
    assert missing.returncode == 2 and "is not a run" in missing.stderr
    schema = cli("report", "schema", cwd=ROOT)
    assert schema.returncode == 0 and '"search"' in schema.stdout


@pytest.mark.slow
def test_killed_run_resumes_from_the_command_line(tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-m",
        "workbench.cli",
        "run",
        str(ROOT / "recipes" / "digits-cpu.yaml"),
        "--reports",
        str(tmp_path),
    ]
    args += [a for s in FAST for a in ("--set", s)]
    process = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy()
    )
    deadline = time.monotonic() + 180
    while not list(tmp_path.glob("digits-cpu/*/variants/*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    finished_before = {p.name for p in tmp_path.glob("digits-cpu/*/variants/*.json")}
    assert finished_before, "no variant finished before the deadline"
    result = subprocess.run([*args, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished_before)} of 4 variants already done" in result.stderr.replace("\n", " ")
    (run,) = ReportStore(tmp_path).runs()
    assert run.read_envelope().status == "complete" and len(run.read_variants()) == 4


def test_cli_usage_errors_are_click_messages_not_tracebacks(tmp_path: Path) -> None:
    for args in (("--bogus",), ("run", "--bogus"), ("run",)):
        result = cli(*args, cwd=tmp_path)
        assert result.returncode == 2, args
        assert "Traceback" not in result.stderr and "--help' for help" in result.stderr, result.stderr
