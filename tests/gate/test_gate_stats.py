"""The gate's statistics on synthetic samples whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.stats import (
    Summary,
    Threshold,
    block_statistics,
    compare_exact,
    compare_paired,
    compare_summaries,
    compare_unpaired,
    decide,
)

TEN_PERCENT = Threshold(0.10, relative=True)


def noisy(centre: float, n: int, cv: float, seed: int) -> np.ndarray:
    return centre * (1 + cv * np.random.default_rng(seed).standard_normal(n))


def test_a_known_slowdown_is_measured_with_its_interval() -> None:
    base = noisy(10.0, 8, 0.01, seed=1)
    cand = noisy(12.0, 8, 0.01, seed=2)  # 20% slower

    c = compare_unpaired(base, cand, higher_is_worse=True, relative=True)

    assert c.change == pytest.approx(0.20, abs=0.02)
    assert c.ci_low < c.change < c.ci_high
    assert c.ci_low > 0.15 and c.ci_high < 0.25
    assert c.p_value is not None and c.p_value < 0.001  # 8 vs 8 fully separated: exact U p = 1/12870
    assert (c.n_baseline, c.n_candidate, c.test) == (8, 8, "Mann-Whitney U")
    assert decide(c, TEN_PERCENT).verdict == "regression"
    assert decide(c, Threshold(0.30, relative=True)).verdict == "pass"


def test_a_drop_in_a_higher_is_better_figure_counts_as_worse() -> None:
    base = noisy(1000.0, 6, 0.01, seed=3)
    cand = noisy(800.0, 6, 0.01, seed=4)  # throughput down 20%

    c = compare_unpaired(base, cand, higher_is_worse=False, relative=True)
    faster = compare_unpaired(cand, base, higher_is_worse=False, relative=True)

    assert c.change == pytest.approx(0.20, abs=0.02)
    assert decide(c, Threshold(0.05, relative=True)).verdict == "regression"
    assert faster.change == pytest.approx(-0.25, abs=0.03)  # 800 → 1000 is 25% better
    assert decide(faster, Threshold(0.05, relative=True)).reason.startswith("better by")


def test_identical_samples_pass_with_no_change() -> None:
    base = noisy(5.0, 6, 0.02, seed=5)

    c = compare_unpaired(base, base, higher_is_worse=True, relative=True)

    assert c.change == 0.0
    assert c.p_value is not None and c.p_value > 0.4
    assert decide(c, TEN_PERCENT).verdict == "pass"


def test_pairing_cancels_drift_that_hides_the_change_unpaired() -> None:
    drift = np.array([1.0, 1.6, 0.8, 2.0, 1.2, 0.9, 1.7, 1.1])  # the machine slows and speeds up between rounds
    base, cand = 10.0 * drift, 11.5 * drift  # the candidate is exactly 15% slower in every round

    paired = compare_paired(base, cand, higher_is_worse=True, relative=True)
    unpaired = compare_unpaired(base, cand, higher_is_worse=True, relative=True)

    assert paired.change == pytest.approx(0.15)
    assert paired.ci_low == pytest.approx(0.15) and paired.ci_high == pytest.approx(0.15)
    assert paired.p_value == pytest.approx(1 / 2**8)  # every round worse: the smallest signed-rank p
    assert decide(paired, TEN_PERCENT).verdict == "regression"
    assert decide(unpaired, TEN_PERCENT).verdict == "inconclusive"  # the drift swamps it


def test_absolute_thresholds_use_differences() -> None:
    base, cand = np.array([1.0, 1.1, 0.9, 1.0, 1.05]), np.array([1.5, 1.6, 1.4, 1.5, 1.55])

    c = compare_paired(base, cand, higher_is_worse=True, relative=False)

    assert c.change == pytest.approx(0.5)
    assert decide(c, Threshold(0.2, relative=False)).verdict == "regression"
    assert decide(c, Threshold(0.6, relative=False)).verdict == "pass"


def test_summary_statistics_use_welch() -> None:
    c = compare_summaries(Summary(100.0, 2.0, 10), Summary(85.0, 2.0, 10), higher_is_worse=False, relative=True)

    assert c.change == pytest.approx(0.15)
    assert c.ci_low < 0.15 < c.ci_high
    assert c.p_value is not None and c.p_value < 1e-6
    assert c.test == "Welch t"
    assert decide(c, Threshold(0.05, relative=True)).verdict == "regression"


def test_an_exact_figure_needs_no_trials() -> None:
    dropped = compare_exact(0.98, 0.97, higher_is_worse=False, relative=False)
    kept = compare_exact(0.98, 0.978, higher_is_worse=False, relative=False)

    assert dropped.change == pytest.approx(0.01)
    assert decide(dropped, Threshold(0.005, relative=False)).verdict == "regression"
    assert decide(kept, Threshold(0.005, relative=False)).verdict == "pass"


def test_too_few_trials_is_inconclusive() -> None:
    base, cand = np.array([10.0, 10.1, 9.9]), np.array([13.0, 13.1, 12.9])

    c = compare_unpaired(base, cand, higher_is_worse=True, relative=True)
    decision = decide(c, TEN_PERCENT, min_trials=5)

    assert decision.verdict == "inconclusive"
    assert decision.reason == "too few trials (3 < 5)"
    assert decide(c, TEN_PERCENT, min_trials=3, method="bootstrap").verdict == "regression"


def test_a_spread_wider_than_the_threshold_is_inconclusive() -> None:
    base = np.array([7.0, 13.0, 10.0, 8.0, 12.0, 9.0, 11.0, 10.0])  # ±30% from trial to trial
    cand = base + 0.5  # 5% slower: the spread cannot tell that from 15%

    decision = decide(compare_unpaired(base, cand, higher_is_worse=True, relative=True), TEN_PERCENT)

    assert decision.verdict == "inconclusive"
    assert "wider than the threshold" in decision.reason


def test_beyond_the_threshold_but_not_significant_is_inconclusive() -> None:
    base = np.array([10.0, 10.2, 9.8, 10.1, 9.9])
    cand = np.array([10.8, 12.4, 11.5, 12.1, 10.9])  # +15% in the middle, but ranks overlap little

    c = compare_unpaired(base, cand, higher_is_worse=True, relative=True)
    strict = decide(c, TEN_PERCENT, alpha=1e-4, method="mann-whitney")

    assert c.change > 0.10
    assert strict.verdict == "inconclusive"
    assert "not significant" in strict.reason


@pytest.mark.parametrize(("shift", "at_most", "at_least"), [(1.00, 0.05, 0.0), (1.15, 1.0, 0.95)])
def test_false_alarms_and_power_on_simulated_trials(shift: float, at_most: float, at_least: float) -> None:
    """A/A draws from one distribution rarely regress; a 15% slowdown under 3% noise is nearly always caught."""
    decisions = [
        decide(
            compare_unpaired(noisy(10.0, 6, 0.03, seed=2 * i), noisy(10.0 * shift, 6, 0.03, seed=2 * i + 1),
                             higher_is_worse=True, relative=True, resamples=1000),
            TEN_PERCENT,
        ).verdict
        for i in range(100)
    ]  # fmt: skip
    rate = decisions.count("regression") / len(decisions)

    assert at_least <= rate <= at_most


def test_blocks_of_rounds_take_the_statistic_of_each_block() -> None:
    assert block_statistics([1, 2, 3, 4, 5, 6], blocks=3, statistic=np.mean) == [1.5, 3.5, 5.5]
    assert block_statistics([4.0, 2.0], blocks=20, statistic=np.min) == [4.0, 2.0]


def test_paired_samples_must_have_equal_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        compare_paired([1.0, 2.0], [1.0], higher_is_worse=True, relative=True)
