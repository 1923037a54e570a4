"""The Python API for notebooks and scripts: run a recipe, read reports back as DataFrames."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from workbench.report.schema import RunEnvelope, VariantRecord
from workbench.report.store import RESULTS_FILE, ReportStore


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
    from workbench.loader import load_recipe
    from workbench.run import run_recipe

    return run_recipe(load_recipe(recipe, overrides), reports=reports, resume=resume).path


def load_runs(reports: str | Path = "reports", recipe: str | None = None) -> pd.DataFrame:
    """Every run's results as one DataFrame: a row per variant × measurement, with recipe and run columns."""
    frames = []
    for run_dir in ReportStore(reports).runs(recipe):
        results = run_dir.path / RESULTS_FILE
        if results.exists():
            frame = pd.read_parquet(results)
            frame.insert(0, "recipe", run_dir.recipe_name)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_report(
    run_ref: str | Path, reports: str | Path = "reports"
) -> tuple[RunEnvelope, pd.DataFrame, list[VariantRecord]]:
    """One run: its envelope, its results table and its variant records."""
    run_dir = ReportStore(reports).find(str(run_ref))
    results = run_dir.path / RESULTS_FILE
    frame = pd.read_parquet(results) if results.exists() else pd.DataFrame()
    return run_dir.read_envelope(), frame, run_dir.read_variants()
