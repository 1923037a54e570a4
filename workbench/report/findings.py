"""What a report says about a run, worked out once for report.md, report.html and the notebooks.

The constraints, objective and price come from the run's own recipe (``run.json``), so a report
re-rendered later says what the run decided; a run without a recipe (``workbench load``) is ranked
on throughput with no constraints.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from pydantic import ValidationError

from workbench.decide.cost import cost_table
from workbench.decide.select import Objective, Selection, measured_rows, pareto_front, rank, select
from workbench.errors import NoFeasibleVariant
from workbench.metrics import column_name
from workbench.recipe.spec import Bound, ObjectiveSpec
from workbench.report.rundir import RunDir
from workbench.report.schema import RunEnvelope
from workbench.report.table import LATENCY_KEYS, RESOURCE_KEYS, SERVER_KEYS

__all__ = ["FLAG_MEANINGS", "Findings", "ReportInputs", "find", "find_run", "report_inputs"]

logger = logging.getLogger(__name__)

LATENCY_LADDER = ("p50", "p90", "p95", "p99", "p999", "max")
FRAME_COLUMNS = (
    "variant", "status", "reason", "runtime", "metric", "accuracy", "accuracy_drop", "artifact_mb",
    "mode", "case", "batch_size", "concurrency", "trials", "flags", "offered_rps", "error_rate",
    *(f"latency_ms_{k}" for k in LATENCY_KEYS), "latency_ms_p50_std",
    "throughput_rps", "throughput_rps_std", "throughput_rps_ci_low", "throughput_rps_ci_high", "throughput_items_per_s",
    *(f"server_{k}" for k in SERVER_KEYS), *RESOURCE_KEYS,
)  # fmt: skip
FLAG_MEANINGS: dict[str, str] = {
    "noisy": "throughput spread across trials above 10%: compare with care",
    "generator_saturated": "the load generator was CPU-bound: the figures are not trusted (add Locust workers)",
    "generator_behind": "the generator sent requests late: the offered rate was not met",
    "unsettled": "the windows never agreed within tolerance before the step's maximum",
    "few_requests": "fewer requests than min_requests: high percentiles are missing or rough",
    "errors": "some requests failed",
    "calibration": "capacity probe of the SLA search",
    "ramp": "a segment of a rate ramp",
    "sla_pass": "this rate met the SLA",
    "sla_fail": "this rate missed the SLA",
    "sla_best": "the highest rate that met the SLA",
}


@dataclass(frozen=True)
class ReportInputs:
    """The constraints, objective and price a run is judged by."""

    constraints: dict[str, Bound]
    objective: Objective
    price_per_hour: float | None = None
    currency: str = "USD"


def report_inputs(envelope: RunEnvelope, *, price_per_hour: float | None = None) -> ReportInputs:
    """Read the judging inputs from the run's recipe; ``price_per_hour`` overrides the recipe's."""
    recipe = envelope.recipe
    try:
        constraints = {column_name(k): Bound.model_validate(v) for k, v in (recipe.get("constraints") or {}).items()}
        objective = Objective.from_spec(ObjectiveSpec.model_validate(recipe.get("objective") or {}))
    except ValidationError as exc:  # a recipe from an older workbench: judge it by the defaults
        logger.warning("run %s: recipe constraints/objective unreadable (%s); using defaults", envelope.run_id, exc)
        constraints, objective = {}, Objective.from_spec(ObjectiveSpec())
    cost = recipe.get("cost") or {}
    price = price_per_hour if price_per_hour is not None else cost.get("price_per_hour")
    return ReportInputs(constraints, objective, price, str(cost.get("currency") or "USD"))


@dataclass(frozen=True)
class Findings:
    """Everything a report shows beyond the raw table."""

    inputs: ReportInputs
    frame: pd.DataFrame
    selection: Selection | None
    why_none: str | None
    ranking: pd.DataFrame
    latency_column: str
    front: pd.DataFrame
    cost: pd.DataFrame | None
    flagged: pd.DataFrame
    details: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def served(self) -> pd.DataFrame:
        """The measured served rows (one per variant × load step)."""
        rows = measured_rows(self.frame)
        return rows[rows["mode"] == "served"] if "mode" in rows else rows.iloc[0:0]

    @property
    def inprocess(self) -> pd.DataFrame:
        """The measured in-process rows (one per variant × batch size)."""
        rows = measured_rows(self.frame)
        return rows[rows["mode"].fillna("inprocess") == "inprocess"] if "mode" in rows else rows


def find(
    envelope: RunEnvelope,
    frame: pd.DataFrame,
    *,
    details: Mapping[str, dict[str, Any]] | None = None,
    price_per_hour: float | None = None,
) -> Findings:
    """Select, rank, find the Pareto front, cost and flagged steps of one run."""
    inputs = report_inputs(envelope, price_per_hour=price_per_hour)
    frame = _complete(frame)
    selection, why_none = _select(frame, inputs)
    ranking = rank(frame, inputs.constraints, inputs.objective)
    latency = _latency_column(ranking)
    return Findings(
        inputs=inputs,
        frame=frame,
        selection=selection,
        why_none=why_none,
        ranking=ranking,
        latency_column=latency,
        front=pareto_front(ranking, ["accuracy", latency]) if "accuracy" in ranking else ranking.iloc[0:0],
        cost=_cost(frame, inputs),
        flagged=_flagged(frame),
        details=dict(details or {}),
    )


def find_run(run: RunDir, *, price_per_hour: float | None = None) -> Findings:
    """``find`` on a run folder: its envelope, results (rebuilt from the records if absent) and load details."""
    envelope = run.read_envelope()
    details = run.read_load_details(r.variant for r in run.read_variants())
    return find(envelope, run.read_results(), details=details, price_per_hour=price_per_hour)


def _complete(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns an older (or in-process only) results table lacks, as empty, so every reader finds them."""
    missing = {c: None for c in FRAME_COLUMNS if c not in frame}
    return frame.assign(**missing) if missing else frame


def _select(frame: pd.DataFrame, inputs: ReportInputs) -> tuple[Selection | None, str | None]:
    try:
        return select(frame, inputs.constraints, inputs.objective), None
    except NoFeasibleVariant as exc:
        return None, str(exc)


def _latency_column(ranking: pd.DataFrame) -> str:
    """The highest percentile every ranked figure carries (in-process p99 needs 300 calls per batch size)."""
    for key in ("p99", "p95", "p90"):
        column = f"latency_ms_{key}"
        if column in ranking and not ranking.empty and ranking[column].notna().all():
            return column
    return "latency_ms_p50"


def _cost(frame: pd.DataFrame, inputs: ReportInputs) -> pd.DataFrame | None:
    if inputs.price_per_hour is None:
        return None
    return cost_table(frame, inputs.constraints, inputs.price_per_hour, batch_size=inputs.objective.batch_size)


def _flagged(frame: pd.DataFrame) -> pd.DataFrame:
    if "flags" not in frame:
        return frame.iloc[0:0]
    return frame[frame["flags"].fillna("").astype(str) != ""]
