"""The Python API for notebooks and scripts: run a recipe, read reports back as DataFrames, select, compare."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

import workbench.decide.select as _selection
from workbench.recipe.spec import Bound
from workbench.report.rundir import ReportStore
from workbench.report.schema import RunEnvelope, VariantRecord

if TYPE_CHECKING:  # the bundle package loads ONNX Runtime and the data sources: only export pays for it
    from workbench.bundle.export import ExportedBundle
    from workbench.decide.compare import RunComparison  # scipy: only compare pays for it


def run(
    recipe: str | Path,
    *,
    overrides: Iterable[str] = (),
    reports: str | Path = "reports",
    resume: bool | str = False,
) -> Path:
    """Run a recipe file end to end; return the run folder.

    Example::

        path = workbench.run("recipes/digits-cpu.yaml", overrides=["measure.trials=3"])
    """
    from workbench.recipe.loader import load_recipe
    from workbench.sweep.runner import run_recipe

    return run_recipe(load_recipe(recipe, overrides), reports=reports, resume=resume).path


def load_runs(reports: str | Path = "reports", recipe: str | None = None) -> pd.DataFrame:
    """Every finished run's results as one DataFrame: a row per variant × measurement, with recipe and
    run columns. A run whose results file is unreadable raises CorruptRunError naming it."""
    frames = []
    for run_dir in ReportStore(reports).runs(recipe):
        if run_dir.has_results:
            frame = run_dir.read_results()
            frame.insert(0, "recipe", run_dir.recipe_name)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_report(
    run_ref: str | Path, reports: str | Path = "reports"
) -> tuple[RunEnvelope, pd.DataFrame, list[VariantRecord]]:
    """One run: its envelope, its results table (rebuilt from the records while the run is in progress)
    and its variant records."""
    run_dir = ReportStore(reports).find(str(run_ref))
    return run_dir.read_envelope(), run_dir.read_results(), run_dir.read_variants()


def select(
    run: str | Path | pd.DataFrame,
    *,
    constraints: Iterable[str] | Mapping[str, Bound] | None = None,
    objective: str | Sequence[str] | None = None,
    batch_size: int | None = None,
    mode: _selection.Mode | None = None,
    price_per_hour: float | None = None,
    reports: str | Path = "reports",
) -> _selection.Selection:
    """The best variant of a run under constraints; raises NoFeasibleVariant (naming the binding
    constraint and the nearest miss) when none is feasible.

    ``run`` is a run reference (or a results DataFrame). ``constraints`` (``"latency_ms.p99<=20"``
    texts or ``{metric: Bound}``) and ``objective`` (``"throughput_rps"``; several terms are
    lexicographic, ``"0.7*throughput_rps"`` terms weighted) default to the run's own recipe.
    ``price_per_hour`` (default: the recipe's ``cost``) adds ``cost_per_million``, which constraints
    and objectives may then name. ``selection.ranking`` holds every variant's figure.

    Example::

        best = workbench.select("latest", constraints=["latency_ms.p99<=20"], objective="throughput_rps")
    """
    from workbench.decide.cost import with_cost

    frame, bounds, goal, price = _judging(run, reports)
    if price_per_hour is not None or price is not None:
        frame = with_cost(frame, price_per_hour or price or 0.0)
    if constraints is not None:
        bounds = dict(constraints) if isinstance(constraints, Mapping) else _selection.parse_constraints(constraints)
    if objective is not None:
        goal = _selection.Objective.parse([objective] if isinstance(objective, str) else list(objective))
    if batch_size is not None or goal.batch_size is None:
        goal = _selection.Objective(goal.terms, goal.kind, batch_size or goal.batch_size)
    return _selection.select(frame, bounds, goal, mode=mode)


def _judging(
    run: str | Path | pd.DataFrame, reports: str | Path
) -> tuple[pd.DataFrame, dict[str, Bound], _selection.Objective, float | None]:
    """A run's results and the constraints, objective and price of its own recipe."""
    from workbench.report.findings import report_inputs

    if isinstance(run, pd.DataFrame):
        return run, {}, _selection.Objective.parse(["throughput_rps"]), None
    envelope, frame, _ = load_report(run, reports)
    inputs = report_inputs(envelope)
    return frame, inputs.constraints, inputs.objective, inputs.price_per_hour


def compare(*runs: str | Path, reports: str | Path = "reports", metrics: Sequence[str] | None = None) -> RunComparison:
    """Two or more runs side by side (the first is the baseline): the CI gate's comparison without
    thresholds (ratios of medians with bootstrap intervals, a verdict word) and warnings where the
    environments differ. ``metrics`` defaults to throughput, p50 and p99 latency.

    Example::

        result = workbench.compare("digits-cpu/0001", "digits-cpu/0002")
        result.table, result.warnings
    """
    from workbench.decide.compare import DEFAULT_METRICS
    from workbench.decide.compare import compare as compare_runs

    return compare_runs(list(runs), reports=reports, metrics=metrics or DEFAULT_METRICS)


def export(
    run: str | Path,
    *,
    out: str | Path | None = None,
    variant: str | None = None,
    name: str | None = None,
    version: str | None = None,
    fallback: str = "auto",
    reports: str | Path = "reports",
    p99_budget_ms: float | None = None,
    sign: str | Path | None = None,
) -> ExportedBundle:
    """Export one variant of a finished run as a bundle that ``python -m serving_harness serve`` runs alone.

    Writes ``out`` (a directory) and ``out.tar.gz``; see ``workbench.bundle.export`` for the contents.

    Example::

        bundle = workbench.export("latest", out="bundles/digits-1.2.0")   # version 1.2.0, the run's best
        print(bundle.path, bundle.digest)
    """
    from workbench.bundle.export import export_bundle

    return export_bundle(
        run, out=out, variant=variant, name=name, version=version, fallback=fallback, reports=reports,
        p99_budget_ms=p99_budget_ms, sign=sign,
    )  # fmt: skip
