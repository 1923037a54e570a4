"""The CI gate's result for people and for CI systems: a plain-text table for the log, Markdown for a
pull-request comment, JUnit XML for test-report views. Every check shows its change with its
interval, the test's p-value (and the one adjusted across the checks, which the verdict used), the
trials on each side and the method, so a reader can judge it. Each output says how the error across
checks was controlled: ``error control: Holm over 32 checks, family-wise α = 0.05``.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from workbench.gate.rules import Check, GateResult
from workbench.stats import ALPHA, RESAMPLES

__all__ = ["junit_xml", "markdown", "text_lines"]

_LABEL = {"regression": "REGRESSION", "inconclusive": "INCONCLUSIVE", "pass": "ok"}
_ICON = {"regression": "❌", "inconclusive": "⚠️", "pass": "✅"}
_COLUMNS = ("verdict", "case", "rule", "change, + is worse [95% CI]", "p", "trials", "method", "why")


def _cells(check: Check) -> dict[str, str]:
    c = check.comparison
    return {
        "verdict": _LABEL[check.verdict],
        "case": check.case,
        "rule": check.rule.text,
        "change, + is worse [95% CI]": c.describe_change() if c else "–",
        "p": _p_cell(check),
        "trials": f"{c.n_baseline} vs {c.n_candidate}" if c else "–",
        "method": _short_method(check),
        "why": check.reason,
    }


def _p_cell(check: Check) -> str:
    """``0.004``, or ``0.004 (adj. 0.128)`` when the verdict used an adjusted p-value."""
    c = check.comparison
    if c is None or c.p_value is None or math.isnan(c.p_value):
        return "–"
    adjusted = check.p_adjusted
    if adjusted is None or math.isclose(adjusted, c.p_value):
        return f"{c.p_value:.3g}"
    return f"{c.p_value:.3g} (adj. {adjusted:.3g})"


def _short_method(check: Check) -> str:
    c = check.comparison
    if c is None:
        return "–"
    return {
        "Mann-Whitney U": "bootstrap + Mann-Whitney U",
        "Wilcoxon signed-rank": "paired bootstrap + Wilcoxon",
        "Welch t": "Welch t (summary only)",
    }.get(c.test, "exact")


def _methods(result: GateResult) -> list[str]:
    """One line per method used, in full."""
    seen: dict[str, str] = {}
    for check in result.checks:
        c = check.comparison
        if c is not None and c.interval not in seen:
            test = "" if c.test == "none" else f"; {c.test}, one-sided, α={ALPHA}"
            resamples = f" ({RESAMPLES} resamples)" if "bootstrap" in c.interval else ""
            seen[c.interval] = f"{c.interval}{resamples}{test}"
    rule = {
        "both": "beyond the threshold, the interval above 0 and the test significant",
        "bootstrap": "beyond the threshold and the interval above 0",
        "mann-whitney": "beyond the threshold and the rank test significant",
    }[result.options.method]
    lines = list(seen.values())
    lines.append(f"regression = {rule}; statistic: {result.options.statistic}; min trials: {result.options.min_trials}")
    return lines


def text_lines(result: GateResult) -> list[str]:
    """The log's view: header, warnings, one aligned row per check, methods, the headline."""
    rows = [dict(zip(_COLUMNS, _COLUMNS, strict=True)), *(_cells(c) for c in result.checks)]
    widths = {col: max(len(row[col]) for row in rows) for col in _COLUMNS[:-1]}
    lines = [f"gate · {result.mode}", f"baseline:  {result.baseline}", f"candidate: {result.candidate}"]
    lines += [f"warning: {w}" for w in result.warnings]
    lines.append("")
    lines += ["  ".join(row[col].ljust(widths[col]) for col in _COLUMNS[:-1]) + "  " + row["why"] for row in rows]
    lines.append("")
    lines += [f"method: {m}" for m in _methods(result)]
    lines.append(f"error control: {result.error_control()}")
    lines += [result.history] if result.history else []
    lines.append(result.headline())
    return lines


def markdown(result: GateResult) -> str:
    """A pull-request comment: the headline first, then the table, warnings and methods."""
    icon = "❌" if result.failed else ("⚠️" if result.count("inconclusive") else "✅")
    lines = [f"### {icon} workbench gate — {result.headline()}", "", f"Error control: {result.error_control()}.", ""]
    lines += [f"> ⚠️ {w}" for w in result.warnings]
    if result.warnings:
        lines.append("")
    lines.append("| | " + " | ".join(_COLUMNS[1:]) + " |")
    lines.append("|---|" + "---|" * (len(_COLUMNS) - 1))
    for check in sorted(result.checks, key=lambda c: ("regression", "inconclusive", "pass").index(c.verdict)):
        cells = _cells(check)
        row = [_ICON[check.verdict], *(cells[col].replace("|", "\\|") for col in _COLUMNS[1:])]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"Mode: {result.mode}. Baseline `{result.baseline}`, candidate `{result.candidate}`.", ""]
    lines += [f"- {m}" for m in _methods(result)]
    lines += [f"- {result.history}"] if result.history else []
    return "\n".join(lines) + "\n"


def junit_xml(result: GateResult) -> str:
    """JUnit XML: a test case per check; a regression fails, an inconclusive check is skipped (or
    fails under ``--inconclusive fail``)."""
    suite = ET.Element("testsuite", name="workbench-gate", tests=str(len(result.checks)))
    failures = skipped = 0
    for check in result.checks:
        case = ET.SubElement(suite, "testcase", classname=check.case, name=check.rule.text)
        detail = " · ".join(f"{k}: {v}" for k, v in _cells(check).items() if k not in {"case", "rule"})
        if check.verdict == "regression" or (check.verdict == "inconclusive" and result.options.inconclusive == "fail"):
            failures += 1
            ET.SubElement(case, "failure", message=check.reason, type=check.verdict).text = detail
        elif check.verdict == "inconclusive":
            skipped += 1
            ET.SubElement(case, "skipped", message=check.reason).text = detail
        else:
            ET.SubElement(case, "system-out").text = detail
    properties = ET.Element("properties")
    ET.SubElement(properties, "property", name="error_control", value=result.error_control())
    if result.history:
        ET.SubElement(properties, "property", name="history", value=result.history)
    suite.insert(0, properties)  # JUnit wants properties before the test cases
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    if result.warnings:
        ET.SubElement(suite, "system-err").text = "\n".join(result.warnings)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
