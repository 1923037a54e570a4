"""A bundle's service levels, from what the run measured for the variant.

Served figures win: they were taken through the same harness, over HTTP, under the recipe's load
profile. The *tested load* is the heaviest step measured (the highest throughput); its p50/p99 are
the bundle's. The p99 budget the alerts use is, in order: the one asked for, the SLA search's bound,
the recipe's ``latency_ms_p99`` constraint, the measured p99 with headroom. The highest throughput
under the SLA is the SLA search's rate when the run searched, else the heaviest tested step that met
the budget without errors (a lower bound, and named so).

A run without served figures falls back to the in-process ones at the smallest batch: they leave out
HTTP, decoding and queueing, so the budget adds an allowance for them, and the manifest says so.
"""

from __future__ import annotations

from typing import Any

from workbench.errors import UsageError
from workbench.recipe.spec import Bound
from workbench.report.schema import Measurement, VariantRecord

__all__ = ["DEFAULT_ERROR_RATE_MAX", "derive_slo"]

DEFAULT_ERROR_RATE_MAX = 0.01
SERVED_HEADROOM = 1.5  # budget = measured p99 x this, when nothing else sets it
INPROCESS_HEADROOM = 2.0
HTTP_ALLOWANCE_MS = 5.0  # in-process p99 leaves out the HTTP layer, JSON decoding and queueing
MIN_BUDGET_MS = 1.0  # below the harness's finest latency buckets the alert could not resolve it


def derive_slo(
    record: VariantRecord,
    *,
    sla: dict[str, Any] | None = None,
    constraints: dict[str, Bound] | None = None,
    p99_budget_ms: float | None = None,
    error_rate_max: float = DEFAULT_ERROR_RATE_MAX,
) -> dict[str, Any]:
    """The manifest's ``slo`` section (serving_harness.bundle.SloSpec fields plus the evidence)."""
    served = [m for m in record.measurements if m.mode == "served"]
    if served:
        return _served(served, sla, constraints or {}, p99_budget_ms, error_rate_max)
    inprocess = [m for m in record.measurements if m.mode == "inprocess"]
    if not inprocess:
        raise UsageError(f"variant {record.variant!r} has no measurements: nothing to derive its SLOs from")
    return _inprocess(inprocess, constraints or {}, p99_budget_ms, error_rate_max)


def _step(m: Measurement) -> dict[str, Any]:
    return {
        "case": m.case,
        "batch_size": m.batch_size,
        "concurrency": m.concurrency,
        "offered_rps": m.offered_rps,
        "latency_ms_p50": m.latency_ms.get("p50"),
        "latency_ms_p99": m.latency_ms.get("p99"),
        "throughput_rps": m.throughput_rps,
        "error_rate": m.error_rate,
        "flags": m.flags,
    }


def _load_label(m: Measurement) -> str:
    if m.offered_rps is not None:
        return f"served, open loop at {m.offered_rps:g} req/s, batch {m.batch_size} (case {m.case})"
    if m.concurrency is not None:
        return f"served, closed loop with {m.concurrency} users, batch {m.batch_size} (case {m.case})"
    return f"served, case {m.case}, batch {m.batch_size}"


def _budget(
    explicit: float | None, sla: dict[str, Any] | None, constraints: dict[str, Bound]
) -> tuple[float, str] | None:
    if explicit is not None:
        return explicit, "asked for at export"
    if sla and sla.get("latency_ms_max") and sla.get("percentile") == "p99":
        return float(sla["latency_ms_max"]), "the SLA search's p99 bound"
    bound = constraints.get("latency_ms_p99")
    if bound is not None and bound.max is not None:
        return bound.max, "the recipe's latency_ms_p99 constraint"
    return None


def _served(
    steps: list[Measurement],
    sla: dict[str, Any] | None,
    constraints: dict[str, Bound],
    explicit: float | None,
    error_rate_max: float,
) -> dict[str, Any]:
    timed = [m for m in steps if m.latency_ms.get("p99") is not None] or steps
    tested = max(timed, key=lambda m: m.throughput_rps)
    p99 = tested.latency_ms.get("p99") or tested.latency_ms.get("max") or 0.0
    budget, basis = _budget(explicit, sla, constraints) or (p99 * SERVED_HEADROOM, f"measured p99 x {SERVED_HEADROOM}")
    budget = max(budget, MIN_BUDGET_MS)
    rate, rate_basis = _max_rate(steps, sla, budget, error_rate_max)
    return {
        "source": "served",
        "load": _load_label(tested),
        "latency_ms_p50": tested.latency_ms.get("p50"),
        "latency_ms_p99": tested.latency_ms.get("p99"),
        "throughput_rps": tested.throughput_rps,
        "latency_budget_ms_p99": round(budget, 3),
        "budget_basis": basis,
        "error_rate_max": error_rate_max,
        "max_throughput_rps_under_sla": rate,
        "max_throughput_basis": rate_basis,
        "steps": [_step(m) for m in steps],
    }


def _max_rate(
    steps: list[Measurement], sla: dict[str, Any] | None, budget_ms: float, error_rate_max: float
) -> tuple[float | None, str]:
    if sla and sla.get("rate_rps") is not None:
        bound = f"{sla.get('percentile')} <= {sla.get('latency_ms_max')} ms"
        return float(sla["rate_rps"]), f"SLA search: highest rate with {bound}"
    within = [
        m.throughput_rps
        for m in steps
        if (m.latency_ms.get("p99") or float("inf")) <= budget_ms and (m.error_rate or 0.0) <= error_rate_max
    ]
    if not within:
        return None, "no tested step met the p99 budget"
    return max(within), "highest tested step within the p99 budget (a lower bound: the run did no SLA search)"


def _inprocess(
    measurements: list[Measurement], constraints: dict[str, Bound], explicit: float | None, error_rate_max: float
) -> dict[str, Any]:
    tested = min(measurements, key=lambda m: m.batch_size)
    p99 = tested.latency_ms.get("p99") or tested.latency_ms.get("max") or 0.0
    derived = (
        p99 * INPROCESS_HEADROOM + HTTP_ALLOWANCE_MS,
        f"in-process p99 x {INPROCESS_HEADROOM} + {HTTP_ALLOWANCE_MS:g} ms for HTTP",
    )
    budget, basis = _budget(explicit, None, constraints) or derived
    return {
        "source": "inprocess",
        "load": f"in-process, batch {tested.batch_size}, one caller (no HTTP, no queueing)",
        "latency_ms_p50": tested.latency_ms.get("p50"),
        "latency_ms_p99": tested.latency_ms.get("p99"),
        "throughput_rps": tested.throughput_rps,
        "latency_budget_ms_p99": round(max(budget, MIN_BUDGET_MS), 3),
        "budget_basis": basis,
        "error_rate_max": error_rate_max,
        "max_throughput_rps_under_sla": None,
        "max_throughput_basis": "the run served no load: in-process figures only",
        "steps": [_step(m) for m in measurements],
    }
