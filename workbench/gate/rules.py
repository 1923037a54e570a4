"""The CI regression gate: is the candidate within budget of the baseline, told apart from noise?

A rule names a figure and how much worse it may get, in pytest-benchmark's compare-fail syntax::

    latency_ms.p99:+10%     p99 latency may rise by at most 10%
    throughput_rps:-5%      throughput may drop by at most 5%
    accuracy:-0.005         accuracy may drop by at most 0.005 (absolute: no %)
    mean:5%                 pytest-benchmark's field; without a sign the figure's own bad direction

Every rule is checked on every case (a variant at a load step, or one benchmark) that both sides
measured. A check is a regression only when the change is beyond the threshold **and** significant
(``workbench.stats``); too few trials or a spread wider than the threshold is inconclusive, which
``inconclusive="fail"`` turns into a failure. Exit code: 0 within budget, 1 regression.

One decision, one error rate: the gate is one verdict over all its checks, so each check's p-value is
adjusted across the checks that have a test before ``decide`` sees it (``error_control``: Holm by
default, the chance that any check fires on identical code stays ≤ α; ``bh`` bounds the share of
false alarms instead; ``none`` tests each check on its own). Exact figures (accuracy) have no test and
are not in the family. The result says how (``GateResult.error_control``), warns when a rank test on
so few trials cannot reach the adjusted level, and warns when the two sides drifted apart
(``drift_warnings``).

Example::

    result = gate(load_source("reports/digits-cpu/baseline", reports=Path("reports")),
                  load_source("latest", reports=Path("reports")),
                  [parse_rule("latency_ms.p99:+10%")])
    sys.exit(result.exit_code)
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, cast

import numpy as np

from workbench.errors import UsageError
from workbench.gate.sources import PYTEST_BENCHMARK_FIELDS, Figure, Source
from workbench.host import environment_differences
from workbench.metrics import HIGHER_IS_BETTER, column_name
from workbench.stats import (
    ALPHA,
    Comparison,
    ErrorControl,
    Method,
    Statistic,
    Summary,
    Threshold,
    Verdict,
    adjust_p_values,
    compare_exact,
    compare_paired,
    compare_summaries,
    compare_unpaired,
    decide,
    smallest_p_value,
)

__all__ = [
    "Check",
    "GateOptions",
    "GateResult",
    "Rule",
    "compare_figures",
    "drift_warnings",
    "gate",
    "gate_options",
    "parse_rule",
]

InconclusivePolicy = Literal["pass", "fail"]
_RULE = re.compile(r"^(?P<metric>[A-Za-z][\w.]*):(?P<sign>[+-])?(?P<amount>\d+(?:\.\d*)?|\.\d+)(?P<percent>%)?$")
# Besides the report's own table (select.HIGHER_IS_BETTER): pytest-benchmark's fields.
_HIGHER_IS_BETTER = {**HIGHER_IS_BETTER, **{name: name == "ops" for name in PYTEST_BENCHMARK_FIELDS}}
_CHOICES = {
    "--inconclusive": ("pass", "fail"),
    "--method": ("both", "bootstrap", "mann-whitney"),
    "--statistic": ("median", "mean"),
    "--error-control": ("holm", "bh", "none"),
}
_CONTROL_NAME = {"holm": "Holm", "bh": "Benjamini–Hochberg", "none": "unadjusted"}
_EMPTY_HINT = {
    True: " (a round had too few requests for it)",
    False: " (a run from before they were stored, or pytest-benchmark without --benchmark-save-data)",
}
_MACHINE_KEYS = (("cpu", ("cpu", "brand_raw")), ("python", ("python_version",)), ("machine", ("machine",)))


@dataclass(frozen=True)
class Rule:
    """``latency_ms.p99:+10%``: a figure, which way is worse, and by how much it may get worse."""

    text: str
    metric: str  # the column name: latency_ms_p99
    higher_is_worse: bool
    threshold: Threshold


def parse_rule(text: str) -> Rule:
    """Parse ``METRIC:[+|-]AMOUNT[%]``; a sign that contradicts the metric's direction is an error."""
    match = _RULE.match(text.strip())
    if match is None:
        raise UsageError(f"--fail {text!r}: expected METRIC:[+|-]AMOUNT[%], e.g. latency_ms.p99:+10% or mean:5%")
    metric, sign = column_name(match["metric"]), match["sign"]
    known = _HIGHER_IS_BETTER.get(metric)
    if known is None and sign is None:
        raise UsageError(f"--fail {text!r}: say which way is worse for {metric!r}: {metric}:+X% or {metric}:-X%")
    higher_is_worse = (sign == "+") if known is None else not known
    if sign is not None and (sign == "+") != higher_is_worse:
        word = "drop" if higher_is_worse else "rise"
        raise UsageError(f"--fail {text!r}: {metric} gets worse as it {'rises' if higher_is_worse else 'drops'}; "
                         f"a {word} is an improvement (write {metric}:{'+' if higher_is_worse else '-'}{match['amount']}"
                         f"{match['percent'] or ''})")  # fmt: skip
    amount = float(match["amount"]) / (100 if match["percent"] else 1)
    if amount <= 0:
        raise UsageError(f"--fail {text!r}: the allowed change must be above 0")
    return Rule(text=text.strip(), metric=metric, higher_is_worse=higher_is_worse,
                threshold=Threshold(amount=amount, relative=bool(match["percent"])))  # fmt: skip


@dataclass(frozen=True)
class GateOptions:
    """How checks are decided. ``cases``: fnmatch patterns of the cases to gate (default: all)."""

    method: Method = "both"
    statistic: Statistic = "median"
    min_trials: int = 5
    inconclusive: InconclusivePolicy = "pass"
    cases: tuple[str, ...] = ()
    error_control: ErrorControl = "holm"  # across the decision's checks: holm, bh or none


def gate_options(
    inconclusive: str,
    method: str,
    statistic: str,
    min_trials: int,
    cases: Sequence[str] = (),
    error_control: str = "holm",
) -> GateOptions:
    """GateOptions from command-line words, each checked against what it may be."""
    words = (
        ("--inconclusive", inconclusive),
        ("--method", method),
        ("--statistic", statistic),
        ("--error-control", error_control),
    )
    for flag, value in words:
        if value not in _CHOICES[flag]:
            raise UsageError(f"{flag} {value!r}: use one of {', '.join(_CHOICES[flag])}")
    return GateOptions(
        method=cast(Method, method),
        statistic=cast(Statistic, statistic),
        min_trials=min_trials,
        inconclusive=cast(InconclusivePolicy, inconclusive),
        cases=tuple(cases),
        error_control=cast(ErrorControl, error_control),
    )


@dataclass(frozen=True)
class Check:
    """One rule on one case."""

    case: str
    rule: Rule
    verdict: Verdict
    reason: str
    comparison: Comparison | None = None
    p_adjusted: float | None = None  # the p-value the verdict used, adjusted across the checks; None: no test


@dataclass(frozen=True)
class GateResult:
    """Every check, the warnings, and the exit code they add up to."""

    baseline: str
    candidate: str
    mode: str
    checks: list[Check]
    warnings: list[str]
    options: GateOptions
    history: str | None = None  # what ``--history`` looked at, when asked (workbench.gate.history)

    def count(self, verdict: Verdict) -> int:
        return sum(check.verdict == verdict for check in self.checks)

    @property
    def failed(self) -> bool:
        inconclusive_fails = self.options.inconclusive == "fail" and self.count("inconclusive") > 0
        return self.count("regression") > 0 or inconclusive_fails

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    @property
    def tested(self) -> int:
        """How many checks had a test, and so a p-value in the adjusted family."""
        return sum(check.p_adjusted is not None for check in self.checks)

    def error_control(self) -> str:
        """How the checks' error was controlled: ``Holm over 32 checks, family-wise α = 0.05``."""
        count, control = self.tested, self.options.error_control
        checks = f"{count} check{'s' if count != 1 else ''}"
        if count == 0:
            return "no check had a test (exact figures only): no error rate to control"
        if self.options.method == "bootstrap":
            return f"none: --method bootstrap has no test to adjust; each of {checks} on its own 95% interval"
        if control == "holm":
            return f"Holm over {checks}, family-wise α = {ALPHA:g}"
        if control == "bh":
            return f"Benjamini–Hochberg over {checks}, false discovery rate {ALPHA:g}"
        chance = 1 - (1 - ALPHA) ** count  # independent checks; correlated ones fire together, less often
        return f"none: each of {checks} at α = {ALPHA:g} on its own (one fires on identical code: up to {chance:.0%})"

    def headline(self) -> str:
        """``FAIL: 1 regression, 3 within budget, 1 inconclusive (counted as pass)``."""
        policy = "counted as failure" if self.options.inconclusive == "fail" else "counted as pass"
        parts = [f"{self.count('regression')} regression(s)", f"{self.count('pass')} within budget"]
        if self.count("inconclusive"):
            parts.append(f"{self.count('inconclusive')} inconclusive ({policy})")
        return f"{'FAIL' if self.failed else 'PASS'}: {', '.join(parts)}"


def gate(baseline: Source, candidate: Source, rules: Sequence[Rule], options: GateOptions | None = None) -> GateResult:
    """Check every rule on every case both sides measured."""
    options = options or GateOptions()
    if not rules:
        raise UsageError("give at least one rule: --fail 'latency_ms.p99:+10%'")
    failures = _failed_variants(baseline, candidate, rules[0])
    keys = _common_cases(baseline, candidate, options.cases, allow_none=bool(failures))
    paired = baseline.kind == candidate.kind == "interleaved"
    measured = [
        (key, rule, _measure(rule, baseline.cases[key], candidate.cases[key], paired, options.statistic))
        for key in keys
        for rule in rules
        if rule.metric in baseline.cases[key] or rule.metric in candidate.cases[key]
    ]
    adjusted = _adjusted_p_values([found for _, _, found in measured], options.error_control)
    checks = [_check(*item, p, options) for item, p in zip(measured, adjusted, strict=True)]
    if keys:
        _require_every_rule_used(rules, checks, baseline, keys)
    checks += failures
    mode = "interleaved A/B (paired rounds)" if paired else f"{baseline.kind} vs {candidate.kind}"
    environment = _environment_warnings(baseline, candidate)
    warnings = [
        *drift_warnings(checks, environment_differs=bool(environment), paired=paired),
        *environment,
        *_missing_warnings(baseline, candidate, options.cases),
        *_reach_warnings(checks, options),
    ]
    return GateResult(baseline.label, candidate.label, mode, checks, warnings, options)


def _common_cases(baseline: Source, candidate: Source, patterns: Sequence[str], *, allow_none: bool) -> list[str]:
    keys = [k for k in baseline.cases if k in candidate.cases and _selected(k, patterns)]
    if not keys and not allow_none:
        raise UsageError(
            f"no case is measured on both sides{' and matches --case' if patterns else ''}: baseline has "
            f"{_names(baseline.cases)}; candidate has {_names(candidate.cases)}"
        )
    return keys


def _selected(key: str, patterns: Sequence[str]) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(key, p) for p in patterns)


def _names(items: Iterable[str], limit: int = 6) -> str:
    names = list(items)
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return shown or "none"


def _require_every_rule_used(rules: Sequence[Rule], checks: list[Check], baseline: Source, keys: list[str]) -> None:
    used = {check.rule.metric for check in checks}
    for rule in rules:
        if rule.metric not in used:
            figures = sorted({name for key in keys for name in baseline.cases[key]})
            raise UsageError(
                f"--fail {rule.text!r}: no case has a figure {rule.metric!r}; there are {_names(figures, 20)}"
            )


def _measure(
    rule: Rule, base: dict[str, Figure], cand: dict[str, Figure], paired: bool, statistic: Statistic
) -> Comparison | str:
    """The rule's comparison on one case, or why there is none."""
    b, c = base.get(rule.metric, Figure()), cand.get(rule.metric, Figure())
    if b.empty or c.empty:
        side = "baseline" if b.empty else "candidate"
        return f"no per-trial figures of {rule.metric} in the {side}{_EMPTY_HINT.get(paired, '')}"
    return _compare(b, c, rule, paired, statistic)


def _adjusted_p_values(measured: Sequence[Comparison | str], control: ErrorControl) -> list[float | None]:
    """Each comparison's p-value adjusted across those with one (the family); None where there is no test."""
    family = [(i, c.p_value) for i, c in enumerate(measured) if isinstance(c, Comparison) and c.p_value is not None]
    adjusted: list[float | None] = [None] * len(measured)
    for (index, _), value in zip(family, adjust_p_values([p for _, p in family], control), strict=True):
        adjusted[index] = value
    return adjusted


def _check(key: str, rule: Rule, measured: Comparison | str, p_adjusted: float | None, options: GateOptions) -> Check:
    """Decide one check on its adjusted p-value; the check keeps the raw comparison for the reader."""
    if isinstance(measured, str):
        return Check(key, rule, "inconclusive", measured)
    judged = measured if p_adjusted is None else replace(measured, p_value=p_adjusted)
    decision = decide(judged, rule.threshold, method=options.method, min_trials=options.min_trials)
    reason = decision.reason
    if p_adjusted is not None and options.error_control != "none":
        reason = reason.replace(", p=", f", {_CONTROL_NAME[options.error_control]}-adjusted p=")
    return Check(key, rule, decision.verdict, reason, measured, p_adjusted)


def _compare(b: Figure, c: Figure, rule: Rule, paired: bool, statistic: Statistic) -> Comparison:
    return compare_figures(
        b, c, higher_is_worse=rule.higher_is_worse, relative=rule.threshold.relative, paired=paired, statistic=statistic
    )


def compare_figures(
    b: Figure,
    c: Figure,
    *,
    higher_is_worse: bool,
    relative: bool = True,
    paired: bool = False,
    statistic: Statistic = "median",
) -> Comparison:
    """Baseline figure ``b`` against candidate figure ``c``: the gate's comparison, before any threshold
    (``workbench compare`` shows exactly this). Neither figure may be empty."""
    worse = higher_is_worse
    if b.exact is not None and c.exact is not None:
        return compare_exact(b.exact, c.exact, higher_is_worse=worse, relative=relative)
    if b.values and c.values:
        if paired and len(b.values) == len(c.values):
            return compare_paired(b.values, c.values, higher_is_worse=worse, relative=relative, statistic=statistic)
        return compare_unpaired(b.values, c.values, higher_is_worse=worse, relative=relative, statistic=statistic)
    return compare_summaries(_summary(b), _summary(c), higher_is_worse=worse, relative=relative)


def _summary(figure: Figure) -> Summary:
    if figure.summary is not None:
        return figure.summary
    values = np.asarray(figure.values or (figure.exact or 0.0,), dtype=np.float64)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return Summary(mean=float(np.mean(values)), std=std, n=len(values))


def _failed_variants(baseline: Source, candidate: Source, rule: Rule) -> list[Check]:
    """A variant the baseline measured that failed in the candidate is a regression in itself."""
    measured = {key.split(" · ")[0] for key in baseline.cases}
    return [
        Check(f"{variant} · status", rule, "regression", f"the variant failed in the candidate: {why}")
        for variant, why in candidate.failed.items()
        if variant in measured
    ]


def drift_warnings(checks: Sequence[Check], *, environment_differs: bool, paired: bool) -> list[str]:
    """Warn when the two sides look measured under different conditions, not just with different code.

    A heuristic: a code change tends to move every case the same way, while a shared machine that got
    busier or quieter between two sequential runs moves some cases beyond their threshold for the worse
    and others beyond it for the better. So: some check's whole interval (relative, timed, + is worse)
    is above its threshold while another's is below minus its threshold, or the two environments'
    fingerprints differ. Interleaved rounds are exempt: the pairing divides drift out. It can fire on a change that
    truly helps one case and hurts another, and miss drift that moved everything one way.
    """
    moved = [
        (check.comparison, check.rule.threshold.amount)
        for check in checks
        if check.comparison is not None
        and check.comparison.test != "none"
        and check.comparison.relative
        and math.isfinite(check.comparison.change)
    ]
    reasons = []
    # Whole intervals beyond the thresholds: noise alone rarely moves a case that clearly, either way.
    worse = any(c.ci_low > limit for c, limit in moved)
    better = any(c.ci_high < -limit for c, limit in moved)
    if worse and better and not paired:
        low, high = min(c.change for c, _ in moved), max(c.change for c, _ in moved)
        reasons.append(f"cases moved between {_percent(low)} and {_percent(high)} (+ is worse)")
    if environment_differs:
        reasons.append("their environments differ")
    if not reasons:
        return []
    return [f"the two runs drifted apart: {'; '.join(reasons)}; prefer --interleave"]


def _percent(value: float) -> str:
    return f"{value:+.0%}".replace("-", "−")


def _reach_warnings(checks: Sequence[Check], options: GateOptions) -> list[str]:
    """Warn when a rank test on this few trials cannot reach the level a lone regression needs."""
    tested = [c for c in checks if c.p_adjusted is not None and c.comparison is not None]
    if not tested or options.method == "bootstrap":
        return []
    needed = ALPHA if options.error_control == "none" else ALPHA / len(tested)
    floors = [
        (floor, c.comparison.test, c.comparison.n_baseline, c.comparison.n_candidate)
        for c in tested
        if c.comparison is not None
        and (floor := smallest_p_value(c.comparison.test, c.comparison.n_baseline, c.comparison.n_candidate))
        is not None
    ]
    if not floors or max(floors)[0] <= needed:
        return []
    floor, test, n_b, n_c = max(floors)
    how = (
        "on its own"
        if options.error_control == "none"
        else f"{_CONTROL_NAME[options.error_control]} over {len(tested)} checks"
    )
    return [
        f"{test} on {n_b} vs {n_c} trials cannot give p below {floor:.3g}, and a lone regression needs "
        f"p ≤ {needed:.3g} ({how}): such a check cannot fail alone; measure more trials or rounds, gate fewer "
        "cases (--case), or use --error-control bh (a regression across many checks then still fails)"
    ]


def _environment_warnings(baseline: Source, candidate: Source) -> list[str]:
    before, after = baseline.environment, candidate.environment
    if not before or not after or baseline.kind != candidate.kind:
        return []
    if baseline.kind == "pytest-benchmark":
        lines = _machine_differences(before.get("machine_info") or {}, after.get("machine_info") or {})
    else:
        lines = environment_differences(before, after)
    return [f"environments differ, figures may move for that reason alone: {line}" for line in lines]


def _machine_differences(before: dict[str, object], after: dict[str, object]) -> list[str]:
    lines = []
    for label, path in _MACHINE_KEYS:
        old, new = _dig(before, path), _dig(after, path)
        if old != new:
            lines.append(f"{label}: {old} → {new}")
    return lines


def _dig(data: object, path: tuple[str, ...]) -> object:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _missing_warnings(baseline: Source, candidate: Source, patterns: Sequence[str]) -> list[str]:
    gone = [k for k in baseline.cases if k not in candidate.cases and _selected(k, patterns)]
    new = [k for k in candidate.cases if k not in baseline.cases and _selected(k, patterns)]
    failed = {f"{v} ·" for v in candidate.failed}
    gone = [k for k in gone if not any(k.startswith(prefix) for prefix in failed)]
    warnings = [f"not measured in the candidate (not gated): {_names(gone)}"] if gone else []
    return warnings + ([f"new in the candidate (no baseline, not gated): {_names(new)}"] if new else [])
