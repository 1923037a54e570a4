"""One verdict, one error rate: p-values adjusted across a decision's checks (Holm, Benjamini–Hochberg),
the Wilson interval the gate's benchmarks report with, and the warnings on drift and on rank tests that
cannot reach the adjusted level."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gate_support import workbench, write_run
from scipy import stats as scipy_stats

from workbench.gate.output import junit_xml, markdown, text_lines
from workbench.gate.rules import GateOptions, GateResult, gate, parse_rule
from workbench.gate.sources import Figure, Source
from workbench.stats import ErrorControl, adjust_p_values, compare_unpaired, decide, smallest_p_value, wilson_interval

P50_2 = parse_rule("latency_ms.p50:+2%")
A_A_SEED = 9  # 40 A/A checks from this seed: unadjusted, two fire; Holm, none


def sides(
    seed: int, *, cases: int = 40, trials: int = 12, cv: float = 0.02, shift: float = 1.0
) -> tuple[Source, Source]:
    """``cases`` cases of p50 latency, ``trials`` per side, noise ``cv``; the candidate ``shift`` times slower."""
    rng = np.random.default_rng(seed)

    def side(label: str, scale: float) -> Source:
        figures = {
            f"v{i} · b1": {
                "latency_ms_p50": Figure(values=tuple(10.0 * scale * (1 + cv * rng.standard_normal(trials))))
            }
            for i in range(cases)
        }
        return Source(label, figures)

    return side("baseline", 1.0), side("candidate", shift)


def run(control: ErrorControl, base: Source, cand: Source, rule: str = "latency_ms.p50:+2%") -> GateResult:
    return gate(base, cand, [parse_rule(rule)], GateOptions(error_control=control))


# ------------------------------------------------------------------------------------- adjustment functions


def test_holm_matches_a_hand_computation() -> None:
    # sorted: 0.01 x4 = 0.04; 0.03 x3 = 0.09; 0.04 x2 = 0.08 → kept at 0.09 (monotone); 0.5 x1 = 0.5
    assert adjust_p_values([0.04, 0.01, 0.5, 0.03], "holm") == pytest.approx([0.09, 0.04, 0.5, 0.09])
    assert adjust_p_values([0.3, 0.6], "holm") == pytest.approx([0.6, 0.6])
    assert adjust_p_values([0.9, 0.8], "holm") == pytest.approx([1.0, 1.0])  # capped at 1


def test_benjamini_hochberg_matches_scipy() -> None:
    p = np.random.default_rng(3).uniform(0, 0.2, 25)
    p[:4] = [0.001, 0.002, 0.0005, 0.01]

    assert adjust_p_values(p, "bh") == pytest.approx(scipy_stats.false_discovery_control(p, method="bh"))
    # by hand: 0.01 x3/1 = 0.03; 0.02 x3/2 = 0.03; 0.04 x3/3 = 0.04
    assert adjust_p_values([0.04, 0.01, 0.02], "bh") == pytest.approx([0.04, 0.03, 0.03])


def test_no_control_keeps_the_p_values_and_nan_counts_as_one() -> None:
    assert adjust_p_values([0.2, 0.01], "none") == [0.2, 0.01]
    assert adjust_p_values([float("nan"), 0.01], "holm") == pytest.approx([1.0, 0.02])
    assert adjust_p_values([], "holm") == []


def test_wilson_interval_matches_known_values() -> None:
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert wilson_interval(1, 30) == pytest.approx((0.00591, 0.16670), abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_smallest_p_values_of_the_rank_tests() -> None:
    assert smallest_p_value("Mann-Whitney U", 5, 5) == pytest.approx(1 / math.comb(10, 5))
    assert smallest_p_value("Wilcoxon signed-rank", 6, 6) == pytest.approx(1 / 2**6)
    assert smallest_p_value("Welch t", 5, 5) is None


# ------------------------------------------------------------------------------------------- the gate's family


def test_forty_a_a_checks_fire_unadjusted_but_not_under_holm() -> None:
    base, cand = sides(A_A_SEED)

    unadjusted, holm, bh = (run(control, base, cand) for control in ("none", "holm", "bh"))

    assert unadjusted.count("regression") == 2 and unadjusted.failed
    assert holm.count("regression") == 0 and not holm.failed
    assert bh.count("regression") == 0
    raw = [c.comparison.p_value for c in holm.checks if c.comparison is not None]
    assert len(raw) == holm.tested == 40
    assert [c.p_adjusted for c in holm.checks] == pytest.approx(holm_by_hand([p for p in raw if p is not None]))
    assert [c.p_adjusted for c in unadjusted.checks] == raw


def holm_by_hand(p: list[float]) -> list[float]:
    """Holm's adjusted p-values, step by step: the k-th smallest (k from 1) times m - k + 1, made monotone."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * len(p), 0.0
    for k, index in enumerate(order, start=1):
        running = max(running, min(1.0, (len(p) - k + 1) * p[index]))
        adjusted[index] = running
    return adjusted


def test_many_a_a_decisions_alarm_near_the_nominal_rate_only_with_holm() -> None:
    """Decisions of 20 A/A checks: unadjusted, far more than 5% of decisions fire; under Holm, about 5% or fewer."""
    alarms: dict[ErrorControl, int] = {"none": 0, "holm": 0}
    for decision in range(40):
        draws = 10 * (1 + 0.02 * np.random.default_rng(1000 + decision).standard_normal((20, 2, 12)))
        comparisons = [
            compare_unpaired(list(base), list(cand), higher_is_worse=True, relative=True, resamples=500)
            for base, cand in draws
        ]
        for control in alarms:
            adjusted = adjust_p_values([1.0 if c.p_value is None else c.p_value for c in comparisons], control)
            judged = [replace(c, p_value=p) for c, p in zip(comparisons, adjusted, strict=True)]
            verdicts = [decide(c, P50_2.threshold).verdict for c in judged]
            alarms[control] += "regression" in verdicts

    assert alarms["none"] >= 5  # over 10% of decisions (6 of 40 with these seeds)
    assert alarms["holm"] <= 2  # ≤ 5%


def test_the_issues_lone_low_p_check_is_inconclusive_under_holm() -> None:
    """32 checks, one throughput +8.6% worse with every trial below the baseline's (p = 1/252): a false
    alarm before, beyond the threshold but not significant once adjusted."""
    steady = (1000.0, 1010.0, 990.0, 1005.0, 995.0)
    cases = {f"v{i} · b1": {"throughput_rps": Figure(values=steady)} for i in range(32)}
    slower = {**cases, "v0 · b1": {"throughput_rps": Figure(values=tuple(v * 0.914 - 5 for v in steady))}}
    base, cand = Source("baseline", cases), Source("candidate", slower)

    before = run("none", base, cand, "throughput_rps:-5%")
    after = run("holm", base, cand, "throughput_rps:-5%")

    assert before.count("regression") == 1
    lone = after.checks[0]
    assert (lone.verdict, after.count("regression")) == ("inconclusive", 0)
    assert lone.comparison is not None and lone.comparison.p_value == pytest.approx(1 / 252)
    assert lone.p_adjusted == pytest.approx(32 / 252)
    assert "Holm-adjusted p=0.127" in lone.reason
    assert any("cannot give p below 0.00397" in w and "p ≤ 0.00156" in w for w in after.warnings)


def test_a_real_regression_across_many_checks_still_fails_under_holm() -> None:
    base, cand = sides(A_A_SEED, shift=1.10)  # every case 10% slower against a 2% threshold

    result = run("holm", base, cand)

    assert result.failed and result.exit_code == 1
    assert result.count("regression") == 40


def test_few_trials_across_many_checks_fail_under_bh_where_holm_cannot() -> None:
    base, cand = sides(A_A_SEED, trials=5, cv=0.005, shift=1.10)  # 5 vs 5: p ≥ 1/252 > 0.05/40

    holm, bh = run("holm", base, cand), run("bh", base, cand)

    assert holm.count("regression") == 0 and any("cannot fail alone" in w for w in holm.warnings)
    assert bh.count("regression") == 40


# ------------------------------------------------------------------------------------------------ the summary


def test_every_output_names_the_error_control() -> None:
    base, cand = sides(A_A_SEED, cases=32)

    holm, bh, none = (run(control, base, cand) for control in ("holm", "bh", "none"))

    assert holm.error_control() == "Holm over 32 checks, family-wise α = 0.05"
    assert "error control: Holm over 32 checks, family-wise α = 0.05" in text_lines(holm)
    assert "Error control: Holm over 32 checks, family-wise α = 0.05." in markdown(holm)
    prop = ET.fromstring(junit_xml(holm)).find("properties/property[@name='error_control']")
    assert prop is not None and prop.get("value") == "Holm over 32 checks, family-wise α = 0.05"
    assert bh.error_control() == "Benjamini–Hochberg over 32 checks, false discovery rate 0.05"
    assert none.error_control().startswith("none: each of 32 checks at α = 0.05 on its own")
    assert "up to 81%" in none.error_control()


def test_the_cli_prints_the_error_control_and_refuses_an_unknown_one(
    tmp_path: Path, fingerprint: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base, cand = write_run(tmp_path, env=fingerprint), write_run(tmp_path, env=fingerprint)
    rules = ["--fail", "latency_ms.p99:+10%", "--fail", "throughput_rps:-5%", "--fail", "accuracy:-0.005"]
    summary = tmp_path / "gate.md"

    code = workbench("gate", "--baseline", base, "--candidate", cand, *rules, "--summary", summary,
                     "--reports", tmp_path, monkeypatch=monkeypatch)  # fmt: skip
    out = capsys.readouterr().out
    bad = workbench("gate", "--baseline", base, "--candidate", cand, *rules, "--error-control", "sidak",
                    "--reports", tmp_path, monkeypatch=monkeypatch)  # fmt: skip

    assert code == 0
    assert "error control: Holm over 2 checks, family-wise α = 0.05" in out  # accuracy is exact: no test
    assert "Error control: Holm over 2 checks" in summary.read_text()
    assert bad == 2 and "--error-control 'sidak'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- drift


def drifting(env_b: dict[str, Any] | None = None, env_c: dict[str, Any] | None = None) -> tuple[Source, Source]:
    """Two sequential runs of unchanged code on a machine that got busier for one case, quieter for another."""
    trials = (10.0, 10.1, 9.9, 10.05, 9.95, 10.02, 9.98, 10.0)
    moves = {"a · b1": 1.65, "b · b1": 0.60, "c · b1": 1.0}  # p50 +65%, −40%, unchanged
    base = {key: {"latency_ms_p50": Figure(values=trials)} for key in moves}
    cand = {key: {"latency_ms_p50": Figure(values=tuple(t * move for t in trials))} for key, move in moves.items()}
    return Source("baseline", base, environment=env_b), Source("candidate", cand, environment=env_c)


def test_cases_moving_both_ways_beyond_the_threshold_warn_of_drift() -> None:
    result = run("holm", *drifting(), "latency_ms.p50:+10%")

    warning = "the two runs drifted apart: cases moved between −40% and +65% (+ is worse); prefer --interleave"
    assert result.warnings[0] == warning
    assert f"> ⚠️ {warning}" in markdown(result)
    assert f"warning: {warning}" in text_lines(result)


def test_different_environments_warn_of_drift(fingerprint: dict[str, Any]) -> None:
    other = {**fingerprint, "python": {**(fingerprint.get("python") or {}), "version": "3.0.0"}}
    trials = (10.0, 10.1, 9.9, 10.05, 9.95)
    same = {"a · b1": {"latency_ms_p50": Figure(values=trials)}}

    result = run("holm", Source("b", same, environment=fingerprint), Source("c", same, environment=other))

    assert result.warnings[0] == "the two runs drifted apart: their environments differ; prefer --interleave"


def test_no_drift_warning_for_a_change_one_way_noise_or_interleaved_rounds() -> None:
    one_way = run("holm", *sides(A_A_SEED, shift=1.10))
    noise = run("holm", *sides(A_A_SEED))
    base, cand = drifting()
    paired = run(
        "holm", Source("b", base.cases, kind="interleaved"), Source("c", cand.cases, kind="interleaved"),
        "latency_ms.p50:+10%",
    )  # fmt: skip

    for result in (one_way, noise, paired):
        assert not any("drifted apart" in w for w in result.warnings)
