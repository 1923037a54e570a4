"""``workbench gate --history DIR``: fail on a regression that crept in, which no pairwise step shows.

Five merges that each make p99 3% slower pass a 10% gate one by one. With ``--history`` the candidate
run is also placed on its recipe's timeline (every run under ``DIR`` measured on the same machine, and
the candidate itself), one series per rule's metric and case, cut at the candidate; a change point in
the worse direction that the candidate still sits behind, among the newest ``HISTORY_WINDOW`` runs, is a
regression of its own, even when the last pairwise step is within the threshold.

Change points come from ``workbench.report.history`` (ruptures PELT on the series in noise units, tuned
there for ≤ 5% false change points on flat noisy series). These checks have no p-value, so they are not
in the gate's adjusted family: their error rate is the detector's own.

Example::

    found = history_checks(find_run("latest", reports=Path("reports")), Path("reports"), rules)
    if any(check.verdict == "regression" for check in found.checks): ...
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from workbench.gate.rules import Check, Rule
from workbench.gate.sources import case_key
from workbench.metrics import HIGHER_IS_BETTER
from workbench.report.history import Point, Series, SeriesKey, hardware_fingerprint, load_history, regressions_at_head
from workbench.report.rundir import RunDir
from workbench.report.schema import RunEnvelope

__all__ = ["HISTORY_WINDOW", "HistoryChecks", "history_checks"]

# Changes among the candidate's newest 8 runs: an older one was gated (and accepted) before. A change
# point needs 4 runs after it (the detector's shortest segment), so a creep ending at the candidate
# shows up a few runs back, not at the candidate itself.
HISTORY_WINDOW = 8


@dataclass(frozen=True)
class HistoryChecks:
    """The history's regressions against the candidate, and one line saying what was looked at."""

    checks: list[Check]
    summary: str


def history_checks(
    candidate: RunDir, history: Path, rules: Sequence[Rule], *, cases: Sequence[str] = (), window: int = HISTORY_WINDOW
) -> HistoryChecks:
    """A regression check for each worse change point the candidate sits behind, per rule and case."""
    envelope = candidate.read_envelope()
    by_metric = {rule.metric: rule for rule in rules if rule.metric in HIGHER_IS_BETTER}
    if not by_metric:
        return HistoryChecks([], "history: no rule is on a figure the timeline keeps; not checked")
    timelines = _timelines(candidate, envelope, history, sorted(by_metric))
    checks = []
    for series in timelines:
        key = case_key(series.key.variant, series.key.case.split(" ", 1)[-1])
        if cases and not any(fnmatch.fnmatchcase(key, pattern) for pattern in cases):
            continue
        rule = by_metric[series.key.metric]
        checks += [
            Check(
                key,
                rule,
                "regression",
                f"history: change point {change.describe()}; the candidate still sits behind it",
            )
            for change in regressions_at_head(series, within_last=window)
        ]
    runs = max((len(s.points) for s in timelines), default=0)
    summary = (
        f"history: {len(timelines)} series of {envelope.recipe_name} on this machine, up to {runs} runs to the "
        f"candidate; worse change points (ruptures PELT) among the newest {window} runs: {len(checks)}"
    )
    return HistoryChecks(checks, summary)


def _timelines(candidate: RunDir, envelope: RunEnvelope, history: Path, metrics: list[str]) -> list[Series]:
    """The series that contain the candidate, on its machine, each cut at the candidate's point.

    The candidate's own reports folder is read too when ``history`` does not hold it (a CI job measures
    into a fresh folder and keeps the history elsewhere).
    """
    hardware, me = hardware_fingerprint(envelope.environment), (envelope.run_id, envelope.created, False)
    merged: dict[SeriesKey, dict[tuple[str, datetime, bool], Point]] = {}
    for folder in dict.fromkeys(path.resolve() for path in (history, candidate.path.parent.parent)):
        for series in load_history(folder, envelope.recipe_name, metrics=metrics).series:
            # Run ids restart in each folder: a run is its id and the moment it was created.
            merged.setdefault(series.key, {}).update({(p.run_id, p.created, p.baseline): p for p in series.points})
    found = []
    for key, points in sorted(merged.items()):
        ordered = sorted(points.values(), key=lambda p: (p.created, p.run_id))
        at = [i for i, p in enumerate(ordered) if (p.run_id, p.created, p.baseline) == me]
        if key.hardware == hardware and at:
            found.append(Series(key, "", tuple(ordered[: at[-1] + 1])))
    return found
