"""``workbench canary URL --duration 5m``: promote, hold or roll back a canary from its live ``/metrics``.

The server (``python -m serving_harness serve --canary STABLE CANDIDATE --weight 0.1``) labels every
metric with the bundle version and says which version is which at ``/v2/canary``. Over ``duration``
the command scrapes ``/metrics`` every ``interval``; each interval is a *round* in which both versions
served the same traffic mix, so the gate's paired statistics apply (``workbench.stats``):

- **latency**: each round's mean server latency of candidate / stable (exact means from the histogram
  sums), bootstrapped over rounds with a Wilcoxon signed-rank test, judged against ``--latency-tolerance``;
- **failures**: 5xx answers plus requests the fallback had to answer, candidate against stable, with
  a one-sided Fisher exact test and ``--error-margin``, and the candidate's rate against its error budget;
- **p99** of each version over the whole watch, from the histogram buckets, against its SLO budget.

Roll back when the candidate is significantly worse on failures or latency, or breaks the p99 budget
the stable version meets; promote when it served ``--min-requests`` and every check passed; else hold,
saying what is missing. ``--apply`` acts on the decision; ``--rollback`` alone sends no more traffic
to the candidate at once (one command, no restart); ``--promote`` sends it all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats as scipy_stats

from workbench.errors import MeasurementError, UsageError
from workbench.measure.server_metrics import metrics_text
from workbench.stats import Comparison, Threshold, compare_paired, decide

__all__ = [
    "APPLY_WEIGHT",
    "EXIT_CODES",
    "FIGURE_COLUMNS",
    "CanaryPolicy",
    "CanaryVerdict",
    "Snapshot",
    "VersionFigures",
    "apply_command",
    "evidence_lines",
    "figure_rows",
    "judge",
    "parse_duration_s",
    "read_split",
    "scrape",
    "set_weight",
    "watch",
]

Decision = Literal["promote", "hold", "rollback"]
TIMEOUT_S = 5.0
FAILED = "5"  # status classes that count as failures: 5xx (errors, timeouts, overload)
MIN_ROUND_REQUESTS = 3  # a round where a version served fewer requests tells nothing about its latency


@dataclass(frozen=True)
class CanaryPolicy:
    """When to roll back and when to promote."""

    min_requests: int = 200
    latency_tolerance: float = 0.10
    error_margin: float = 0.005
    alpha: float = 0.05
    min_rounds: int = 5


@dataclass
class _Version:
    """One version's cumulative counters in one scrape."""

    requests: float = 0.0
    failures: float = 0.0
    fallbacks: float = 0.0
    latency_sum_s: float = 0.0
    latency_count: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    drift_psi_max: float | None = None


Snapshot = dict[str, _Version]  # version -> counters


@dataclass(frozen=True)
class VersionFigures:
    """What one version did over the watch."""

    version: str
    role: str
    requests: int
    failures: int
    fallbacks: int
    failure_rate: float
    latency_ms_mean: float | None
    latency_ms_p50: float | None
    latency_ms_p99: float | None
    budget_ms_p99: float | None
    error_rate_max: float | None
    drift_psi_max: float | None


@dataclass(frozen=True)
class CanaryVerdict:
    """The decision, why, and the evidence it rests on."""

    decision: Decision
    reasons: list[str]
    stable: VersionFigures
    candidate: VersionFigures
    latency: Comparison | None
    latency_verdict: str
    failures_p_value: float | None
    rounds: int


# ------------------------------------------------------------------------------------------------ the server


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def read_split(url: str, token: str | None = None) -> dict[str, Any]:
    """``GET /v2/canary``: model, stable and candidate versions, weight, SLOs."""
    try:
        response = httpx.get(f"{url.rstrip('/')}/v2/canary", headers=_headers(token), timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise MeasurementError(f"{url} did not answer: {exc}") from exc
    if response.status_code == 404:
        raise UsageError(f"{url} serves no canary (start it with `python -m serving_harness serve --canary A B`)")
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


def set_weight(url: str, weight: float, token: str | None = None) -> dict[str, Any]:
    """``POST /v2/canary``: the candidate's share of traffic from now on (0 rolls back)."""
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/v2/canary", json={"weight": weight}, headers=_headers(token), timeout=TIMEOUT_S
        )
    except httpx.HTTPError as exc:
        raise MeasurementError(f"{url} did not answer: {exc}") from exc
    if response.status_code != 200:
        raise UsageError(f"{url} refused the new weight ({response.status_code}): {response.text.strip()}")
    document: dict[str, Any] = response.json()
    return document


def scrape(url: str, model: str, token: str | None = None) -> Snapshot:
    """Each version's counters of ``model`` from one ``/metrics`` scrape."""
    return parse_metrics(metrics_text(url, TIMEOUT_S, token), model)


def parse_metrics(text: str, model: str) -> Snapshot:
    """The counters of every version of ``model`` in Prometheus text."""
    found: Snapshot = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model") != model or "version" not in labels:
                continue
            _add(found.setdefault(labels["version"], _Version()), sample.name, labels, sample.value)
    return found


def _add(version: _Version, name: str, labels: dict[str, str], value: float) -> None:
    if name == "sh_requests_total":
        version.requests += value
        if labels.get("status", "").startswith(FAILED):
            version.failures += value
    elif name == "sh_fallback_total":
        version.fallbacks += value
    elif name == "sh_request_duration_seconds_sum":  # summed: one series per protocol (http, grpc)
        version.latency_sum_s += value
    elif name == "sh_request_duration_seconds_count":
        version.latency_count += value
    elif name == "sh_request_duration_seconds_bucket":
        le = float(labels["le"])
        version.buckets[le] = version.buckets.get(le, 0.0) + value
    elif name == "sh_drift_psi" and labels.get("stat") == "max":
        version.drift_psi_max = max(value, version.drift_psi_max or 0.0)


def watch(
    url: str,
    model: str,
    *,
    duration_s: float,
    interval_s: float,
    on_scrape: Callable[[int, Snapshot], None] | None = None,
    token: str | None = None,
) -> list[Snapshot]:
    """Scrapes at the start and every ``interval_s`` until ``duration_s`` has passed."""
    rounds = max(1, round(duration_s / interval_s))
    started = time.monotonic()
    snapshots = [scrape(url, model, token)]
    for index in range(1, rounds + 1):
        time.sleep(max(0.0, started + index * interval_s - time.monotonic()))
        snapshots.append(scrape(url, model, token))
        if on_scrape is not None:
            on_scrape(index, snapshots[-1])
    return snapshots


def parse_duration_s(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1h`` -> seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    value = text.strip().lower()
    scale = units.get(value[-1:])
    try:
        seconds = float(value[:-1]) * scale if scale else float(value)
    except ValueError:
        raise UsageError(f"a duration is a number with s, m or h (5m, 30s), got {text!r}") from None
    if seconds <= 0:
        raise UsageError(f"a duration must be positive, got {text!r}")
    return seconds


# ---------------------------------------------------------------------------------------------- the decision


def judge(
    snapshots: list[Snapshot],
    *,
    stable: str,
    candidate: str,
    slo: dict[str, dict[str, Any]] | None = None,
    policy: CanaryPolicy | None = None,
) -> CanaryVerdict:
    """Promote, hold or roll back ``candidate`` against ``stable`` from successive scrapes."""
    policy = policy or CanaryPolicy()
    if len(snapshots) < 2:
        raise UsageError("judging a canary needs at least two scrapes")
    slo = slo or {}
    figures = {
        v: _figures(snapshots, v, role, slo.get(v, {})) for v, role in ((stable, "stable"), (candidate, "candidate"))
    }
    s, c = figures[stable], figures[candidate]
    comparison, latency_verdict, latency_reason = _latency(snapshots, stable, candidate, policy)
    p_value = _failures_p_value(s, c)
    rollback = _rollback_reasons(s, c, p_value, latency_verdict, latency_reason, policy)
    if rollback:
        return CanaryVerdict("rollback", rollback, s, c, comparison, latency_verdict, p_value, len(snapshots) - 1)
    missing = _hold_reasons(s, c, latency_verdict, latency_reason, policy)
    decision: Decision = "hold" if missing else "promote"
    reasons = missing or [f"{c.requests} requests, no check failed: {latency_reason}"]
    return CanaryVerdict(decision, reasons, s, c, comparison, latency_verdict, p_value, len(snapshots) - 1)


def _delta(snapshots: list[Snapshot], version: str, index: int) -> tuple[_Version, _Version]:
    empty = _Version()
    return snapshots[index - 1].get(version, empty), snapshots[index].get(version, empty)


def _figures(snapshots: list[Snapshot], version: str, role: str, slo: dict[str, Any]) -> VersionFigures:
    first, last = snapshots[0].get(version, _Version()), snapshots[-1].get(version, _Version())
    requests = last.requests - first.requests
    failures = last.failures - first.failures + last.fallbacks - first.fallbacks
    count = last.latency_count - first.latency_count
    buckets = {le: last.buckets[le] - first.buckets.get(le, 0.0) for le in last.buckets}
    return VersionFigures(
        version=version,
        role=role,
        requests=int(requests),
        failures=int(failures),
        fallbacks=int(last.fallbacks - first.fallbacks),
        failure_rate=failures / requests if requests > 0 else 0.0,
        latency_ms_mean=1000 * (last.latency_sum_s - first.latency_sum_s) / count if count > 0 else None,
        latency_ms_p50=_quantile_ms(buckets, 0.50),
        latency_ms_p99=_quantile_ms(buckets, 0.99),
        budget_ms_p99=slo.get("latency_budget_ms_p99"),
        error_rate_max=slo.get("error_rate_max"),
        drift_psi_max=last.drift_psi_max,
    )


def _quantile_ms(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear inside the bucket that holds the rank."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return 1000 * lower
            share = (rank - below) / (count - below) if count > below else 1.0
            return 1000 * (lower + (bound - lower) * share)
        lower, below = bound, count
    return 1000 * lower


def _round_means(snapshots: list[Snapshot], stable: str, candidate: str) -> tuple[list[float], list[float]]:
    """Per round, each version's mean latency; rounds where either served too little are left out."""
    base, cand = [], []
    for index in range(1, len(snapshots)):
        means = []
        for version in (stable, candidate):
            before, after = _delta(snapshots, version, index)
            count = after.latency_count - before.latency_count
            means.append((after.latency_sum_s - before.latency_sum_s) / count if count >= MIN_ROUND_REQUESTS else 0.0)
        if all(m > 0 for m in means):
            base.append(means[0])
            cand.append(means[1])
    return base, cand


def _latency(
    snapshots: list[Snapshot], stable: str, candidate: str, policy: CanaryPolicy
) -> tuple[Comparison | None, str, str]:
    base, cand = _round_means(snapshots, stable, candidate)
    if len(base) < 2:
        return None, "inconclusive", f"{len(base)} rounds in which both versions served {MIN_ROUND_REQUESTS}+ requests"
    comparison = compare_paired(base, cand, higher_is_worse=True, relative=True, statistic="mean")
    verdict = decide(
        comparison, Threshold(policy.latency_tolerance, relative=True), alpha=policy.alpha, min_trials=policy.min_rounds
    )
    return (
        comparison,
        verdict.verdict,
        f"mean latency {comparison.describe_change()} over {len(base)} rounds: {verdict.reason}",
    )


def _failures_p_value(s: VersionFigures, c: VersionFigures) -> float | None:
    """One-sided Fisher exact test that the candidate fails more often than the stable version."""
    if s.requests <= 0 or c.requests <= 0:
        return None
    table = [[c.failures, c.requests - c.failures], [s.failures, s.requests - s.failures]]
    return float(scipy_stats.fisher_exact(table, alternative="greater")[1])


def _wilson_low(failures: int, requests: int, z: float = 1.645) -> float:
    """The lower end of the one-sided 95% Wilson interval of a failure rate."""
    if requests <= 0:
        return 0.0
    p = failures / requests
    centre = p + z * z / (2 * requests)
    spread = z * math.sqrt(p * (1 - p) / requests + z * z / (4 * requests * requests))
    return max(0.0, (centre - spread) / (1 + z * z / requests))


def _rollback_reasons(
    s: VersionFigures,
    c: VersionFigures,
    p_value: float | None,
    latency_verdict: str,
    latency_reason: str,
    policy: CanaryPolicy,
) -> list[str]:
    reasons = []
    worse = c.failure_rate - s.failure_rate
    if p_value is not None and p_value < policy.alpha and worse > policy.error_margin:
        reasons.append(
            f"failures {c.failure_rate:.2%} against {s.failure_rate:.2%} (+{worse:.2%} > {policy.error_margin:.2%}, "
            f"Fisher exact p={p_value:.3g})"
        )
    if c.error_rate_max is not None and _wilson_low(c.failures, c.requests) > c.error_rate_max:
        reasons.append(f"failures {c.failure_rate:.2%} over the error budget of {c.error_rate_max:.2%}, beyond noise")
    if latency_verdict == "regression":
        reasons.append(latency_reason)
    if _breaks_budget(c, policy) and not _breaks_budget(s, policy):
        reasons.append(f"p99 {c.latency_ms_p99:.3g} ms over its {c.budget_ms_p99:g} ms budget, which stable meets")
    return reasons


def _breaks_budget(v: VersionFigures, policy: CanaryPolicy) -> bool:
    enough = v.requests >= policy.min_requests  # a p99 of a few requests is its maximum
    return (
        enough and v.latency_ms_p99 is not None and v.budget_ms_p99 is not None and v.latency_ms_p99 > v.budget_ms_p99
    )


def _hold_reasons(
    s: VersionFigures, c: VersionFigures, latency_verdict: str, latency_reason: str, policy: CanaryPolicy
) -> list[str]:
    reasons = []
    if c.requests < policy.min_requests:
        reasons.append(f"the candidate served {c.requests} of the {policy.min_requests} requests needed to promote")
    if latency_verdict != "pass":
        reasons.append(f"latency inconclusive: {latency_reason}")
    if c.failure_rate > s.failure_rate + policy.error_margin:
        reasons.append(f"failures {c.failure_rate:.2%} against {s.failure_rate:.2%}: higher, not yet significant")
    if _breaks_budget(c, policy):
        reasons.append(f"p99 {c.latency_ms_p99:.3g} ms over its {c.budget_ms_p99:g} ms budget (stable too)")
    return reasons


# ------------------------------------------------------------------------------------------------- reporting

APPLY_WEIGHT: dict[str, float] = {"promote": 1.0, "rollback": 0.0}  # the candidate's weight after --apply
EXIT_CODES: dict[str, int] = {"promote": 0, "hold": 3, "rollback": 4}
FIGURE_COLUMNS = (
    "version",
    "role",
    "requests",
    "failures",
    "fallback",
    "mean ms",
    "p50 ms",
    "p99 ms",
    "p99 budget",
    "drift PSI",
)


def figure_rows(verdict: CanaryVerdict) -> list[tuple[str, ...]]:
    """The evidence table: one row per version, in FIGURE_COLUMNS order."""
    return [_row(v) for v in (verdict.stable, verdict.candidate)]


def _row(v: VersionFigures) -> tuple[str, ...]:
    return (
        v.version,
        v.role,
        str(v.requests),
        f"{v.failures} ({v.failure_rate:.2%})",
        str(v.fallbacks),
        _ms(v.latency_ms_mean),
        _ms(v.latency_ms_p50),
        _ms(v.latency_ms_p99),
        _ms(v.budget_ms_p99),
        "–" if v.drift_psi_max is None else f"{v.drift_psi_max:.3f}",
    )


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def evidence_lines(verdict: CanaryVerdict) -> list[str]:
    """How each check came out, in words."""
    lines = [f"rounds: {verdict.rounds}"]
    if verdict.latency is not None:
        c = verdict.latency
        p = "" if c.p_value is None else f", {c.test} p={c.p_value:.3g}"
        lines.append(
            f"latency: candidate/stable mean {c.describe_change()} ({c.interval}{p}) -> {verdict.latency_verdict}"
        )
    else:
        lines.append(f"latency: {verdict.latency_verdict} (too few rounds with traffic on both versions)")
    if verdict.failures_p_value is not None:
        lines.append(f"failures: one-sided Fisher exact p={verdict.failures_p_value:.3g}")
    return lines


def apply_command(url: str, decision: str) -> str:
    """The one command that acts on ``decision`` (empty for hold)."""
    flag = {"promote": "--promote", "rollback": "--rollback"}.get(decision)
    return f"workbench canary {url} {flag}" if flag else ""
