"""Compare runs: the gate's comparison without thresholds (ratios of medians with bootstrap intervals,
a rank test, a verdict word), alignment by variant and step, environment warnings.

The runs compared are copies of the golden digits run (real in-process trials and served windows); a
copy stands for "the same run elsewhere" with its environment (CPU, library versions, threads) or its
figures edited the way another machine or a faster build would have written them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from report_support import run_cli

from workbench._api import compare as api_compare
from workbench.decide.compare import compare
from workbench.errors import UsageError
from workbench.gate.rules import GateOptions, gate, parse_rule
from workbench.gate.sources import load_source
from workbench.report.rundir import RunDir


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
    """The variant's in-process throughput (figure, spread and trials) × factor, as a faster build would
    have measured it; compare, like the gate, reads the variant records."""

    def scale(record: dict[str, Any]) -> None:
        for measurement in record["measurements"]:
            if measurement["mode"] != "inprocess":
                continue
            for name in ("throughput_rps", "throughput_rps_std", "throughput_items_per_s"):
                measurement[name] *= factor
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
    assert (table["ci_low"] <= 1.0).all() and (table["ci_high"] >= 1.0).all()
    assert set(table["verdict"]) == {"no clear change"}
    assert {m.split("; ")[-1] for m in table["method"]} <= {"Mann-Whitney U", "Welch t"}
    assert result.warnings == () and result.unmatched == ()


def test_served_steps_are_compared_on_their_windows_like_the_gate(golden: RunDir, tmp_path: Path) -> None:
    """The golden v1 run kept served windows only in load/<variant>.json: the gate's loader reads them."""
    twin = copy_run(golden, tmp_path, "0002-20260101T000000Z")
    table = compare([golden, twin], metrics=["latency_ms_p99"]).table
    served = table[table["mode"] == "served"]
    assert set(served["case"]) == {"c1", "c4"}
    assert (served["n_baseline"] >= 3).all() and served["method"].str.contains("ratio of medians").all()


def test_a_faster_variant_is_better_with_an_interval_above_one(golden: RunDir, tmp_path: Path) -> None:
    faster = copy_run(golden, tmp_path, "0002-20260101T000000Z")
    speed_up(faster, "ort-fp32", 2.0)
    table = compare([golden, faster], metrics=["throughput_rps"]).table
    fp32 = table[(table["variant"] == "ort-fp32") & (table["mode"] == "inprocess")]
    assert not fp32.empty
    assert all(r == pytest.approx(2.0) for r in fp32["ratio"]) and (fp32["ci_low"] > 1.0).all()
    assert set(fp32["verdict"]) == {"faster"}
    eager = table[(table["variant"] == "torch-eager") & (table["mode"] == "inprocess")]
    assert set(eager["verdict"]) == {"no clear change"}


def test_compare_and_gate_agree_on_direction_and_interval(golden: RunDir, tmp_path: Path) -> None:
    slower = copy_run(golden, tmp_path, "0002-20260101T000000Z")
    speed_up(slower, "ort-fp32", 0.5)
    table = compare([golden, slower], metrics=["throughput_rps"]).table
    checks = gate(
        load_source(golden.path, reports=tmp_path), load_source(slower.path, reports=tmp_path),
        [parse_rule("throughput_rps:-5%")], GateOptions(min_trials=3, method="bootstrap"),  # 3 trials: U cannot reach p<0.05
    ).checks  # fmt: skip
    assert {c.verdict for c in checks} >= {"regression"}
    for check in checks:
        variant, case = check.case.split(" · ")
        row = table[(table["variant"] == variant) & (table["case"] == case)].iloc[0]
        assert check.comparison is not None
        # throughput: the gate's change is 1 - ratio (a drop is worse), over the same interval
        assert row["ratio"] == pytest.approx(1 - check.comparison.change)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(
            (1 - check.comparison.ci_high, 1 - check.comparison.ci_low)
        )
        assert row["p_value"] == pytest.approx(check.comparison.p_value)
        if check.verdict == "regression":
            assert row["verdict"] == "slower"
        if row["verdict"] == "slower":
            assert check.comparison.ci_low > 0


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

    def drop_b8(record: dict[str, Any]) -> None:
        record["measurements"] = [m for m in record["measurements"] if m["step"] != "b8"]  # a v1 record

    edit_json(fewer.variant_path("ort-fp32"), drop_b8)
    result = compare([golden, fewer])
    assert result.unmatched == (f"ort-fp32 inprocess b8: only in digits-cpu/{golden.run_id}",)
    assert not ((result.table["variant"] == "ort-fp32") & (result.table["case"] == "b8")).any()


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
    assert "no clear change" in captured.out and "throughput_rps" in captured.out
    assert "method: bootstrap 95% CI of the ratio of medians; Mann-Whitney U" in captured.out
    assert "thread setting OMP_NUM_THREADS: none vs 4" in captured.err
