"""The one statistics module: summaries of raw samples, bootstrap intervals, and comparisons with rank tests.

Summaries (after optimum-benchmark's tracker): percentiles come from the raw samples at µs precision,
never from pre-rounded figures.

Comparisons (the CI gate's, and ``workbench compare``, which is the gate's comparison shown without
thresholds): is the candidate worse than the baseline by more than a threshold, and is that more than noise?


Every comparison is oriented so that a **positive change is worse** (slower, fewer requests per second,
lower accuracy), relative (``+0.12`` = 12% worse) or absolute (in the figure's unit). Its interval is a
percentile bootstrap; its test is one-sided ("the candidate is worse"):

========================  ==========================================  ============================
samples                   interval                                    rank test
========================  ==========================================  ============================
independent trials        bootstrap of the ratio of medians (means)   Mann-Whitney U
paired rounds (A/B)       bootstrap of the median per-round ratio     Wilcoxon signed-rank
mean, std and n only      delta-method t interval of the ratio        Welch's t
one exact value           none (a deterministic figure has no noise)  none
========================  ==========================================  ============================

``decide`` turns a comparison into a verdict for threshold ``t``::

    fewer than min_trials trials on a side      → inconclusive
    the whole interval within t                 → pass
    the whole interval beyond t, significant    → regression
    interval half-width wider than t            → inconclusive (the spread hides a change of size t)
    change beyond t and significant             → regression
    change beyond t, not significant            → inconclusive
    otherwise                                   → pass

Many checks in one decision (``adjust_p_values``): each check's test at α = 0.05 on its own lets one of 32
checks on identical code fire with chance up to 1 − 0.95³² ≈ 81%. The gate feeds ``decide`` each check's
p-value adjusted across the decision's checks, Holm (family-wise error ≤ α, the default) or
Benjamini–Hochberg (false discovery rate ≤ α). ``smallest_p_value`` says how small a rank test's p can get
with so few trials, and ``wilson_interval`` is the interval of a rate (the gate's benchmarks report with it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as scipy_stats

__all__ = [
    "MIN_SAMPLES",
    "PERCENTILES",
    "Comparison",
    "Decision",
    "ErrorControl",
    "Method",
    "Statistic",
    "Summary",
    "Threshold",
    "Verdict",
    "adjust_p_values",
    "block_statistics",
    "bootstrap_ci",
    "coefficient_of_variation",
    "compare_exact",
    "compare_paired",
    "compare_summaries",
    "compare_unpaired",
    "decide",
    "latency_summary_ms",
    "round_order",
    "smallest_p_value",
    "wilson_interval",
]

PERCENTILES: dict[str, float] = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p999": 99.9}
# Fewest samples for which a percentile means something: p99 needs hundreds.
MIN_SAMPLES: dict[str, int] = {"p50": 10, "p90": 50, "p95": 100, "p99": 300, "p999": 3000}


def latency_summary_ms(samples_ns: np.ndarray) -> dict[str, float | None]:
    """p50..p99.9, max and mean in milliseconds (µs precision kept as float).

    A percentile taken from fewer samples than MIN_SAMPLES asks for is None, not a guess.
    """
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    summary: dict[str, float | None] = {}
    for name, q in PERCENTILES.items():
        enough = len(ms) >= MIN_SAMPLES[name]
        summary[name] = round(float(np.percentile(ms, q)), 3) if enough else None
    summary["max"] = round(float(ms.max()), 3)
    summary["mean"] = round(float(ms.mean()), 3)
    return summary


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values``."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) < 2:
        value = float(statistic(data)) if len(data) else float("nan")
        return value, value
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(data), size=(resamples, len(data)))
    stats = np.apply_along_axis(statistic, 1, data[picks])
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(stats, tail)), float(np.percentile(stats, 100 - tail))


def coefficient_of_variation(values: Sequence[float] | np.ndarray) -> float:
    data = np.asarray(values, dtype=np.float64)
    mean = float(data.mean()) if len(data) else 0.0
    return float(data.std(ddof=1) / mean) if len(data) > 1 and mean > 0 else 0.0


def round_order(labels: Sequence[str], round_index: int) -> list[str]:
    """The order in which round ``round_index`` measures ``labels``: rotated each round, so none always goes
    first (for two labels: AB, BA, AB, … — the ABBA design). Every interleaved comparison uses it, so drift
    on a shared machine hits every contender alike."""
    shift = round_index % len(labels) if labels else 0
    return [*labels[shift:], *labels[:shift]]


Verdict = Literal["pass", "regression", "inconclusive"]
ErrorControl = Literal["holm", "bh", "none"]
Method = Literal["bootstrap", "mann-whitney", "both"]
Statistic = Literal["median", "mean"]

CONFIDENCE = 0.95
ALPHA = 0.05  # one-sided level of the rank test
RESAMPLES = 4000
SEED = 0  # a fixed seed: the same measurements always give the same decision


def _median(data: np.ndarray, axis: int | None = None) -> np.ndarray:
    return np.asarray(np.median(data, axis=axis))


def _mean(data: np.ndarray, axis: int | None = None) -> np.ndarray:
    return np.asarray(np.mean(data, axis=axis))


_STATISTICS: dict[str, Callable[..., np.ndarray]] = {"median": _median, "mean": _mean}


@dataclass(frozen=True)
class Threshold:
    """How much worse is allowed: ``amount`` > 0, a fraction when ``relative`` (0.10 = 10%)."""

    amount: float
    relative: bool

    def describe(self) -> str:
        return f"{self.amount:.1%}" if self.relative else f"{self.amount:g}"


@dataclass(frozen=True)
class Summary:
    """What a figure without per-trial values still tells: mean, standard deviation, trials."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Comparison:
    """Baseline against candidate for one figure; ``change`` and its interval are positive when worse."""

    change: float
    ci_low: float
    ci_high: float
    p_value: float | None  # one-sided, "the candidate is worse"; None without a test
    relative: bool
    baseline: float  # each side's statistic, for the reader
    candidate: float
    n_baseline: int
    n_candidate: int
    interval: str  # how the interval was taken
    test: str  # which test gave p_value

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2

    def describe_change(self) -> str:
        """``+12.3% [+8.1%, +16.0%]`` (worse is positive)."""
        point = self._signed(self.change)
        if self.ci_low == self.ci_high == self.change:
            return point
        return f"{point} [{self._signed(self.ci_low)}, {self._signed(self.ci_high)}]"

    def _signed(self, value: float) -> str:
        return _figure(value, self.relative, sign="+")


@dataclass(frozen=True)
class Decision:
    """A verdict and why, with the comparison it was made from."""

    verdict: Verdict
    reason: str
    comparison: Comparison


# ----------------------------------------------------------------------------------------------- comparisons


def compare_unpaired(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    higher_is_worse: bool,
    relative: bool,
    statistic: Statistic = "median",
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
) -> Comparison:
    """Independent trials: bootstrap each side separately; Mann-Whitney U for the test."""
    base, cand = _array(baseline), _array(candidate)
    sign = 1.0 if higher_is_worse else -1.0
    fn = _STATISTICS[statistic]
    rng = np.random.default_rng(SEED)
    boot_b = fn(base[rng.integers(0, len(base), (resamples, len(base)))], 1)
    boot_c = fn(cand[rng.integers(0, len(cand), (resamples, len(cand)))], 1)
    stat_b, stat_c = float(fn(base)), float(fn(cand))
    with np.errstate(divide="ignore", invalid="ignore"):
        point = sign * (stat_c / stat_b - 1) if relative else sign * (stat_c - stat_b)
        spread = sign * (boot_c / boot_b - 1) if relative else sign * (boot_c - boot_b)
    low, high = _percentiles(spread, confidence)
    test = scipy_stats.mannwhitneyu(cand, base, alternative="greater" if higher_is_worse else "less")
    what = "ratio" if relative else "difference"
    return Comparison(
        change=float(point),
        ci_low=low,
        ci_high=high,
        p_value=float(test.pvalue),
        relative=relative,
        baseline=stat_b,
        candidate=stat_c,
        n_baseline=len(base),
        n_candidate=len(cand),
        interval=f"bootstrap {confidence:.0%} CI of the {what} of {statistic}s",
        test="Mann-Whitney U",
    )


def compare_paired(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    higher_is_worse: bool,
    relative: bool,
    statistic: Statistic = "median",
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
) -> Comparison:
    """Paired rounds (``baseline[i]`` and ``candidate[i]`` measured back to back): each round's ratio
    (or difference) cancels what drifted between rounds; bootstrap the rounds, Wilcoxon signed-rank test."""
    base, cand = _array(baseline), _array(candidate)
    if len(base) != len(cand):
        raise ValueError(f"paired samples differ in length: {len(base)} and {len(cand)}")
    sign = 1.0 if higher_is_worse else -1.0
    fn = _STATISTICS[statistic]
    with np.errstate(divide="ignore", invalid="ignore"):
        per_round = sign * (np.log(cand / base) if relative else cand - base)
    rng = np.random.default_rng(SEED)
    boot = fn(per_round[rng.integers(0, len(per_round), (resamples, len(per_round)))], 1)
    point = float(fn(per_round))
    low, high = _percentiles(boot, confidence)
    if relative:  # log ratio → oriented relative change, e.g. 0.0953 → +10%
        point, low, high = (_from_log(v, sign) for v in (point, low, high))
        low, high = min(low, high), max(low, high)
    what = "per-round ratio" if relative else "per-round difference"
    return Comparison(
        change=point,
        ci_low=low,
        ci_high=high,
        p_value=_wilcoxon_greater(per_round),
        relative=relative,
        baseline=float(fn(base)),
        candidate=float(fn(cand)),
        n_baseline=len(base),
        n_candidate=len(cand),
        interval=f"paired bootstrap {confidence:.0%} CI of the {statistic} {what}",
        test="Wilcoxon signed-rank",
    )


def compare_summaries(
    baseline: Summary, candidate: Summary, *, higher_is_worse: bool, relative: bool, confidence: float = CONFIDENCE
) -> Comparison:
    """Only mean, std and n on each side: Welch's t, with a delta-method interval for a ratio."""
    sign = 1.0 if higher_is_worse else -1.0
    b, c = baseline, candidate
    var_b, var_c = b.std**2 / max(b.n, 1), c.std**2 / max(c.n, 1)
    if relative:  # on the log scale: var(log mean) ≈ var(mean) / mean²
        var_b, var_c = var_b / b.mean**2 if b.mean else math.inf, var_c / c.mean**2 if c.mean else math.inf
        centre = math.log(c.mean / b.mean) if b.mean > 0 and c.mean > 0 else math.nan
    else:
        centre = c.mean - b.mean
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, _welch_df(var_b, b.n, var_c, c.n))) * math.sqrt(var_b + var_c)
    ends = (centre - half, centre, centre + half)
    # Both maps are increasing in the oriented value, so the middle end stays the point estimate.
    oriented = sorted(_from_log(sign * v, sign) if relative else sign * v for v in ends)
    low, point, high = oriented
    test = scipy_stats.ttest_ind_from_stats(
        c.mean, c.std, c.n, b.mean, b.std, b.n, equal_var=False, alternative="greater" if higher_is_worse else "less"
    )
    return Comparison(
        change=point,
        ci_low=low,
        ci_high=high,
        p_value=float(test.pvalue),
        relative=relative,
        baseline=b.mean,
        candidate=c.mean,
        n_baseline=b.n,
        n_candidate=c.n,
        interval=f"Welch {confidence:.0%} CI from summary statistics (no per-trial values)",
        test="Welch t",
    )


def compare_exact(baseline: float, candidate: float, *, higher_is_worse: bool, relative: bool) -> Comparison:
    """A deterministic figure (accuracy on a fixed evaluation set): the change is exact."""
    sign = 1.0 if higher_is_worse else -1.0
    if relative:
        change = sign * (candidate / baseline - 1) if baseline > 0 else math.nan
    else:
        change = sign * (candidate - baseline)
    return Comparison(
        change=float(change),
        ci_low=float(change),
        ci_high=float(change),
        p_value=None,
        relative=relative,
        baseline=baseline,
        candidate=candidate,
        n_baseline=1,
        n_candidate=1,
        interval="exact (a deterministic figure)",
        test="none",
    )


# -------------------------------------------------------------------------------------------------- decision


def decide(
    comparison: Comparison,
    threshold: Threshold,
    *,
    method: Method = "both",
    alpha: float = ALPHA,
    min_trials: int = 5,
) -> Decision:
    """The verdict for one comparison against one threshold (see the module docstring)."""
    c, limit = comparison, threshold.amount
    exact = c.test == "none"
    if not math.isfinite(c.change):
        return Decision("inconclusive", "no ratio: a side's figure is zero, negative or missing", c)
    if not exact and min(c.n_baseline, c.n_candidate) < min_trials:
        trials = min(c.n_baseline, c.n_candidate)
        return Decision("inconclusive", f"too few trials ({trials} < {min_trials})", c)
    if c.ci_high <= limit:
        return Decision("pass", _within(c, limit), c)
    if c.ci_low > limit and (exact or _significant(c, method, alpha)):
        return Decision(
            "regression", f"worse by {_amount(c.change, c)}, all of the interval beyond {threshold.describe()}", c
        )
    if c.half_width > limit:
        return Decision("inconclusive", f"spread ±{_amount(c.half_width, c)} is wider than the threshold", c)
    if c.change <= limit:
        return Decision("pass", _within(c, limit), c)
    if exact or _significant(c, method, alpha):
        return Decision("regression", f"worse by {_amount(c.change, c)}, beyond {threshold.describe()}", c)
    p = "" if c.p_value is None else f", p={c.p_value:.3g}"
    return Decision("inconclusive", f"beyond the threshold but not significant{p}", c)


def _significant(c: Comparison, method: Method, alpha: float) -> bool:
    interval_says = c.ci_low > 0
    test_says = c.p_value is not None and c.p_value < alpha
    if method == "bootstrap":
        return interval_says
    if method == "mann-whitney":
        return test_says
    return interval_says and test_says


def _within(c: Comparison, limit: float) -> str:
    if c.ci_high < 0:
        return f"better by {_amount(-c.change, c)}"
    return f"within budget ({_amount(c.change, c)} of {_amount(limit, c)} allowed)"


def _amount(value: float, c: Comparison) -> str:
    return _figure(value, c.relative)


def _figure(value: float, relative: bool, sign: str = "") -> str:
    """A change for the reader: a percentage when relative, else 4 significant digits; never "-0"."""
    value += 0.0
    return f"{value:{sign}.1%}" if relative else f"{value:{sign}.4g}"


# ------------------------------------------------------------------------------------------ across checks


def adjust_p_values(p_values: Sequence[float] | np.ndarray, method: ErrorControl = "holm") -> list[float]:
    """Adjusted p-values of a family of tests, in the order given: compare each with α.

    ``holm``: Holm–Bonferroni step-down, the family-wise error rate (any false alarm) stays ≤ α;
    ``bh``: Benjamini–Hochberg step-up, the expected share of false alarms among alarms stays ≤ α
    (as ``scipy.stats.false_discovery_control``); ``none``: unchanged. A NaN p-value counts as 1.

    Example: ``adjust_p_values([0.01, 0.04, 0.03])`` is ``[0.03, 0.06, 0.06]`` (Holm).
    """
    p = np.nan_to_num(np.asarray(p_values, dtype=np.float64), nan=1.0)
    count = len(p)
    if method == "none" or count == 0:
        return [float(v) for v in p]
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":  # the i-th smallest (from 0) times m - i, never below an earlier one's
        adjusted = np.maximum.accumulate(ranked * (count - np.arange(count)))
    elif method == "bh":  # the i-th smallest times m / (i + 1), never above a later one's
        adjusted = np.minimum.accumulate((ranked * count / np.arange(1, count + 1))[::-1])[::-1]
    else:
        raise ValueError(f"unknown error control {method!r}: use holm, bh or none")
    result = np.empty(count)
    result[order] = np.minimum(adjusted, 1.0)
    return [float(v) for v in result]


def smallest_p_value(test: str, n_baseline: int, n_candidate: int) -> float | None:
    """The smallest one-sided p-value ``test`` can give with these trials (every candidate trial worse
    than every baseline trial); None for a test without such a floor (Welch's t) or without a test.

    A rank test on few trials cannot reach a small p: Mann-Whitney on 5 vs 5 never goes below 1/252,
    Wilcoxon on 6 rounds never below 1/64, however large the change.
    """
    if test == "Mann-Whitney U" and n_baseline > 0 and n_candidate > 0:
        low, high = np.arange(n_baseline, dtype=np.float64), np.arange(n_candidate, dtype=np.float64) + n_baseline
        return float(scipy_stats.mannwhitneyu(high, low, alternative="greater").pvalue)
    if test == "Wilcoxon signed-rank" and n_baseline > 0:
        return _wilcoxon_greater(np.arange(1, n_baseline + 1, dtype=np.float64))
    return None


def wilson_interval(successes: int, trials: int, *, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a rate ``successes / trials`` (sound near 0 and 1, unlike the normal one).

    Example: 1 of 30 false alarms is 3.3%, with a 95% interval of [0.6%, 16.7%].
    """
    if trials <= 0:
        return 0.0, 1.0
    z = float(scipy_stats.norm.ppf(0.5 + confidence / 2))
    rate, z2 = successes / trials, z * z
    centre = (rate + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z / (1 + z2 / trials) * math.sqrt(rate * (1 - rate) / trials + z2 / (4 * trials * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


# ---------------------------------------------------------------------------------------------------- helpers


def block_statistics(values: Sequence[float], *, blocks: int, statistic: Callable[[np.ndarray], float]) -> list[float]:
    """Cut a long series of rounds into ``blocks`` consecutive blocks and take ``statistic`` of each.

    Consecutive rounds are correlated (a neighbour's burst slows several in a row); block figures are
    closer to independent trials (the batch-means method), and a rank test on thousands of rounds
    would call any drift significant.
    """
    data = _array(values)
    count = max(1, min(blocks, len(data)))
    return [float(statistic(chunk)) for chunk in np.array_split(data, count) if len(chunk)]


def _array(values: Sequence[float]) -> np.ndarray:
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or not len(data):
        raise ValueError("need at least one value per side")
    return data


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = values[~np.isnan(values)]  # ±inf stays: a side that measured 0 is infinitely worse
    if not len(finite):
        return math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    # inverted_cdf picks resampled values (no interpolation): an infinite end stays infinite, not NaN
    ends = np.percentile(finite, [tail, 100 - tail], method="inverted_cdf")
    return float(ends[0]), float(ends[1])


def _from_log(oriented_log_ratio: float, sign: float) -> float:
    """An oriented log ratio back to an oriented relative change: worse is positive either way."""
    return sign * (math.exp(sign * oriented_log_ratio) - 1)


def _wilcoxon_greater(differences: np.ndarray) -> float:
    """One-sided Wilcoxon signed-rank p-value that the differences are above 0 (1.0 when all are 0)."""
    nonzero = differences[(differences != 0) & ~np.isnan(differences)]
    if not len(nonzero):
        return 1.0
    ranked = np.clip(nonzero, -1e300, 1e300)  # only the ranks count: an infinite change ranks first
    return float(scipy_stats.wilcoxon(ranked, alternative="greater").pvalue)


def _welch_df(var_b: float, n_b: int, var_c: float, n_c: int) -> float:
    denominator = var_b**2 / max(n_b - 1, 1) + var_c**2 / max(n_c - 1, 1)
    return (var_b + var_c) ** 2 / denominator if denominator > 0 else float(max(n_b + n_c - 2, 1))
