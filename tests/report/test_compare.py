"""Compare runs: alignment by variant and step, ratios with bootstrap intervals, environment warnings.

The runs compared are copies of the golden digits run (real in-process trials and served windows); a
copy stands for "the same run elsewhere" with its environment (CPU, library versions, threads) or its
figures edited the way another machine or a faster build would have written them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from report_support import run_cli

from workbench._api import compare as api_compare
from workbench.decide.compare import compare
from workbench.errors import UsageError
from workbench.report.rundir import RESULTS_FILE, RunDir


def copy_run(run: RunDir, root: Path, run_id: str) -> RunDir:
    target = root / run.recipe_name / run_id
    shutil.copytree(run.path, target)
    envelope = json.loads((target / "run.json").read_text())
    (target / "run.json").write_text(json.dumps({**envelope, "run_id": run_id}))
    return RunDir(target)


def edit_json(path: Path, change: Any) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def speed_up(run: RunDir, variant: str, factor: float) -> None:
    """The variant's throughput figures and trials × factor, as a faster build would have measured them."""
    results = pd.read_parquet(run.path / RESULTS_FILE)
    mine = results["variant"] == variant
    for column in (
        "throughput_rps",
        "throughput_rps_std",
        "throughput_rps_ci_low",
        "throughput_rps_ci_high",
        "throughput_items_per_s",
    ):
        results.loc[mine, column] *= factor
    results.to_parquet(run.path / RESULTS_FILE, index=False)

    def scale(record: dict[str, Any]) -> None:
        for measurement in record["measurements"]:
            samples = measurement.get("samples", {})
            samples["throughput_rps"] = [v * factor for v in samples.get("throughput_rps", [])]

    edit_json(run.variant_path(variant), scale)


def test_a_run_against_its_copy_is_within_noise_and_raises_no_warning(golden: RunDir, tmp_path: Path) -> None:
    twin = copy_run(golden, tmp_path, "0002-20260101T000000Z")
    result = compare([golden, twin])
    table = result.table
    assert set(table["variant"]) == {"torch-eager", "ort-fp32"}
    assert {"inprocess", "served"} <= set(table["mode"])
    assert (table["ratio"] == 1.0).all()
    with_interval = table.dropna(subset=["ci_low"])
    assert (
        not with_interval.empty and (with_interval["ci_low"] <= 1.0).all() and (with_interval["ci_high"] >= 1.0).all()
    )
    assert set(with_interval["verdict"]) == {"within noise"}
    assert set(with_interval["source"]) <= {"trials", "windows", "normal"}
    assert result.warnings == () and result.unmatched == ()


def test_a_faster_variant_is_better_with_an_interval_above_one(golden: RunDir, tmp_path: Path) -> None:
    faster = copy_run(golden, tmp_path, "0002-20260101T000000Z")
    speed_up(faster, "ort-fp32", 2.0)
    table = compare([golden, faster], metrics=["throughput_rps"]).table
    fp32 = table[(table["variant"] == "ort-fp32") & (table["mode"] == "inprocess")]
    assert not fp32.empty
    assert all(r == pytest.approx(2.0) for r in fp32["ratio"]) and (fp32["ci_low"] > 1.0).all()
    assert set(fp32["verdict"]) == {"better"}
    eager = table[(table["variant"] == "torch-eager") & (table["mode"] == "inprocess")]
    assert set(eager["verdict"]) == {"within noise"}


def test_environment_differences_are_warned(golden: RunDir, tmp_path: Path) -> None:
    elsewhere = copy_run(golden, tmp_path, "0002-20260101T000000Z")

    def other_machine(envelope: dict[str, Any]) -> None:
        env = envelope["environment"]
        env["cpu"]["model"] = "Intel(R) Xeon(R) Platinum 8375C"
        env["libraries"]["onnxruntime"] = "1.0.0"
        env["threads"]["OMP_NUM_THREADS"] = "8"

    edit_json(elsewhere.path / "run.json", other_machine)
    edit_json(elsewhere.variant_path("ort-fp32"), lambda r: r["serving"]["runtime"].update(intra_op_threads=2))
    warnings = "\n".join(compare([golden, elsewhere]).warnings)
    assert "cpu.model differs: " in warnings and "Intel(R) Xeon(R) Platinum 8375C" in warnings
    assert "library onnxruntime: " in warnings and "vs 1.0.0" in warnings
    assert "thread setting OMP_NUM_THREADS: none vs 8" in warnings
    assert "variant ort-fp32 serving settings differ: runtime.intra_op_threads 1 → 2" in warnings


def test_figures_in_one_run_only_are_listed(golden: RunDir, tmp_path: Path) -> None:
    fewer = copy_run(golden, tmp_path, "0002-20260101T000000Z")
    results = pd.read_parquet(fewer.path / RESULTS_FILE)
    results[~((results["variant"] == "ort-fp32") & (results["step"] == "b8"))].to_parquet(fewer.path / RESULTS_FILE)
    result = compare([golden, fewer])
    assert result.unmatched == (f"ort-fp32 inprocess b8: only in digits-cpu/{golden.run_id}",)
    assert not ((result.table["variant"] == "ort-fp32") & (result.table["step"] == "b8")).any()


def test_compare_needs_two_runs_and_known_metrics(golden: RunDir) -> None:
    with pytest.raises(UsageError, match="at least two runs"):
        compare([golden])
    with pytest.raises(UsageError, match="unknown metric 'speed'"):
        compare([golden, golden], metrics=["speed"])


def test_python_api_and_cli(
    golden: RunDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "reports"
    first = copy_run(golden, root, "0001-20260101T000000Z")
    second = copy_run(golden, root, "0002-20260102T000000Z")
    edit_json(second.path / "run.json", lambda e: e["environment"]["threads"].update(OMP_NUM_THREADS="4"))
    result = api_compare("digits-cpu/0001", "digits-cpu/0002", reports=root)
    assert result.runs == (f"digits-cpu/{first.run_id}", f"digits-cpu/{second.run_id}")
    assert run_cli(monkeypatch, "compare", "digits-cpu/0001", "digits-cpu/0002", "--reports", str(root)) == 0
    captured = capsys.readouterr()
    assert "within noise" in captured.out and "throughput_rps" in captured.out
    assert "thread setting OMP_NUM_THREADS: none vs 4" in captured.err
