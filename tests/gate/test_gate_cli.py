"""``workbench gate`` and ``workbench baseline promote`` through the real CLI entry point: exit codes,
the printed method and trials, the Markdown summary, the JUnit XML, inconclusive handling."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gate_support import RECIPE, VARIANT, inputs, workbench, write_run

STEADY = [1000.0, 1010.0, 990.0, 1005.0, 995.0]
P99 = [2.0, 2.02, 1.98, 2.01, 1.99]
RULES = ["--fail", "latency_ms.p99:+10%", "--fail", "throughput_rps:-5%", "--fail", "accuracy:-0.005"]


def test_within_budget_exits_0_and_prints_method_and_trials(
    tmp_path: Path, fingerprint: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write_run(tmp_path, env=fingerprint)
    cand = write_run(tmp_path, throughput_rps=[s * 1.01 for s in STEADY], env=fingerprint)

    code = workbench(
        "gate", "--baseline", base, "--candidate", cand, *RULES, "--reports", tmp_path, monkeypatch=monkeypatch
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "PASS: 0 regression(s), 3 within budget" in out
    assert "5 vs 5" in out and "Mann-Whitney U" in out and "bootstrap 95% CI of the ratio of medians" in out
    assert f"{VARIANT} · b1" in out and f"{VARIANT} · quality" in out


def test_a_regression_exits_1_with_summary_and_junit(
    tmp_path: Path, fingerprint: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write_run(tmp_path, env=fingerprint)
    cand = write_run(tmp_path, latency_ms_p99=[v * 1.3 for v in P99], accuracy=0.97, env=fingerprint)
    summary, junit = tmp_path / "gate.md", tmp_path / "gate.xml"

    code = workbench(
        "gate", "--baseline", base, "--candidate", cand, *RULES, "--summary", summary, "--junit", junit,
        "--reports", tmp_path, monkeypatch=monkeypatch,
    )  # fmt: skip

    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL: 2 regression(s), 1 within budget" in out
    assert "+30.0% [" in out  # the p99 change, with its interval
    text = summary.read_text()
    assert text.startswith("### ❌ workbench gate — FAIL")
    assert "| ❌ | ort-fp32 · b1 | latency_ms.p99:+10% | +30.0% [" in text
    assert "| ❌ | ort-fp32 · quality | accuracy:-0.005 | +0.01 |" in text
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "2", "0")
    failed = {case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None}
    assert failed == {"latency_ms.p99:+10%", "accuracy:-0.005"}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("p99>10", "expected METRIC:[+|-]AMOUNT[%]"),
        ("throughput_rps:+5%", "a rise is an improvement"),
        ("gpu_util:+5%", "no case has a figure 'gpu_util'"),
        ("queue_depth:5", "say which way is worse"),
    ],
)
def test_bad_rules_exit_2(
    rule: str,
    message: str,
    tmp_path: Path,
    fingerprint: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = write_run(tmp_path, env=fingerprint)

    code = workbench("gate", "--baseline", base, "--candidate", base, "--fail", rule, monkeypatch=monkeypatch)

    assert code == 2
    assert message in capsys.readouterr().err


def test_bad_sources_exit_2(
    tmp_path: Path, fingerprint: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write_run(tmp_path, env=fingerprint)

    missing = workbench("gate", "--baseline", base, "--candidate", "9999", *RULES, "--reports", tmp_path,
                        monkeypatch=monkeypatch)  # fmt: skip
    assert missing == 2 and "'9999' is not a run" in capsys.readouterr().err
    one_side = workbench("gate", "--baseline", base, *RULES, monkeypatch=monkeypatch)
    assert one_side == 2 and "give --baseline and --candidate" in capsys.readouterr().err
    policy = workbench("gate", "--baseline", base, "--candidate", base, *RULES, "--inconclusive", "maybe",
                       monkeypatch=monkeypatch)  # fmt: skip
    assert policy == 2 and "--inconclusive 'maybe'" in capsys.readouterr().err


def test_inconclusive_counts_as_the_user_says(
    tmp_path: Path, fingerprint: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write_run(tmp_path, env=fingerprint)
    cand = write_run(tmp_path, throughput_rps=STEADY[:3], latency_ms_p99=P99[:3], env=fingerprint)  # 3 trials only
    rule = ["--fail", "throughput_rps:-5%", "--junit", tmp_path / "gate.xml"]

    lenient = workbench("gate", "--baseline", base, "--candidate", cand, *rule, monkeypatch=monkeypatch)
    lenient_out = capsys.readouterr().out
    skipped = ET.parse(tmp_path / "gate.xml").getroot().get("skipped")
    strict = workbench("gate", "--baseline", base, "--candidate", cand, *rule, "--inconclusive", "fail",
                       monkeypatch=monkeypatch)  # fmt: skip
    strict_out = capsys.readouterr().out

    assert (lenient, strict) == (0, 1)
    assert "too few trials (3 < 5)" in lenient_out
    assert "1 inconclusive (counted as pass)" in lenient_out and skipped == "1"
    assert "FAIL: 0 regression(s), 0 within budget, 1 inconclusive (counted as failure)" in strict_out


def test_a_run_without_per_trial_samples_falls_back_to_welch(
    tmp_path: Path, fingerprint: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write_run(tmp_path, env=fingerprint, samples=False)
    cand = write_run(tmp_path, throughput_rps=[s * 0.8 for s in STEADY], env=fingerprint, samples=False)

    code = workbench("gate", "--baseline", base, "--candidate", cand, *RULES, monkeypatch=monkeypatch)

    out = capsys.readouterr().out
    assert code == 1
    assert "Welch t (summary only)" in out
    assert "no per-trial figures of latency_ms_p99 in the baseline" in out


def test_a_variant_that_fails_in_the_candidate_is_a_regression(
    tmp_path: Path, fingerprint: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write_run(tmp_path, env=fingerprint)
    cand = write_run(tmp_path, env=fingerprint, status="failed")

    code = workbench("gate", "--baseline", base, "--candidate", cand, *RULES, monkeypatch=monkeypatch)

    assert code == 1
    assert "the variant failed in the candidate: export failed" in capsys.readouterr().out


def test_promote_keeps_the_environment_and_the_gate_warns_when_it_differs(
    tmp_path: Path, fingerprint: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path, env=fingerprint)
    elsewhere = {**fingerprint, "cpu": {**fingerprint["cpu"], "model": "Some Other CPU", "cores_logical": 64}}
    cand = write_run(tmp_path, env=elsewhere)

    promoted = workbench("baseline", "promote", f"{RECIPE}/{run.name}", "--reports", tmp_path, monkeypatch=monkeypatch)
    baseline = tmp_path / RECIPE / "baseline"
    again = workbench("baseline", "promote", str(cand), "--reports", tmp_path, monkeypatch=monkeypatch)
    promote_out = capsys.readouterr().out
    code = workbench("gate", "--baseline", run, "--candidate", baseline, *RULES, monkeypatch=monkeypatch)

    assert (promoted, again) == (0, 0)
    assert f"(replacing {run.name})" in promote_out
    assert json.loads((baseline / "baseline.json").read_text())["run_id"] == cand.name
    assert json.loads((baseline / "run.json").read_text())["environment"]["cpu"]["model"] == "Some Other CPU"
    assert code == 0
    out = capsys.readouterr().out
    assert "warning: environments differ, figures may move for that reason alone: cpu model: " in out
    assert "Some Other CPU" in out and "logical cores" in out


def test_a_real_run_promoted_and_gated_against_itself_passes(
    tmp_path: Path, fast_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole path: in-process trials → per-trial samples in the report → baseline → gate."""
    from workbench.recipe.loader import load_recipe
    from workbench.sweep.runner import run_recipe

    data = tmp_path / "data.npz"
    np.savez(data, **inputs(64), labels=np.arange(64) % 10)
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        f"name: {RECIPE}\nmodel: {{source: onnx, path: {fast_model}}}\ndata: {{source: npz, path: {data}}}\n"
        "search: {pipelines: {ort: []}}\nconstraints: {}\n"
        "measure: {batch_sizes: [1], trials: 5, trial_duration_s: 0.05, warmup_iters: 5, min_trial_iters: 20}\n"
    )
    run = run_recipe(load_recipe(recipe), reports=tmp_path / "reports").path
    samples = json.loads(next((run / "variants").glob("*.json")).read_text())["measurements"][0]["samples"]

    promoted = workbench("baseline", "promote", "latest", "--reports", tmp_path / "reports", monkeypatch=monkeypatch)
    code = workbench(
        "gate", "--baseline", f"{RECIPE}/baseline", "--candidate", f"{RECIPE}/{run.name}",
        "--fail", "latency_ms.p50:+10%", "--fail", "throughput_rps:-5%", "--reports", tmp_path / "reports",
        monkeypatch=monkeypatch,
    )  # fmt: skip

    assert len(samples["throughput_rps"]) == 5 and len(samples["latency_ms_p50"]) == 5
    out = capsys.readouterr().out
    assert promoted == 0 and code == 0
    assert "PASS: 0 regression(s)" in out  # within budget, or inconclusive when this machine is busy
    assert out.count("  +0.0%") == 2 and out.count("5 vs 5") == 2  # the same trials: no change at all


def test_a_known_figure_a_step_could_not_carry_is_inconclusive(
    tmp_path: Path, fingerprint: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write_run(tmp_path, env=fingerprint)  # no p90: too few calls for it

    code = workbench("gate", "--baseline", base, "--candidate", base, "--fail", "latency_ms.p90:+5%",
                     monkeypatch=monkeypatch)  # fmt: skip

    assert code == 0
    assert "no per-trial figures of latency_ms_p90 in the baseline" in capsys.readouterr().out
