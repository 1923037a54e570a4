"""Runs for the report tests: a fresh digits run (made once, in-process, a few seconds) and copies of
the golden v1 run (a real digits run with served load steps, committed under golden/)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from report_support import GOLDEN_RUN

from workbench.report.rundir import RunDir

ROOT = Path(__file__).parents[2]
DIGITS = ROOT / "recipes" / "digits-cpu.yaml"
# Seconds, not minutes: the figures only need to exist, not to be precise. Served load costs ~15 s a
# variant here (server and Locust start-up), so served figures come from the golden run instead.
FAST = [
    "measure.trials=3",
    "measure.trial_duration_s=0.05",
    "measure.warmup_iters=2",
    "measure.min_trial_iters=5",
    "measure.batch_sizes=[1, 8]",
    "search.baseline=torch-eager",
    "search.pipelines={torch-eager: [], ort-fp32: [export.onnx]}",
    "cost={price_per_hour: 0.5}",
    "load.enabled=false",
]


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """A finished digits run with a price; finalize wrote report.md and report.html."""
    from workbench.recipe.loader import load_recipe
    from workbench.sweep.runner import run_recipe  # torch: only the tests that need a run pay for the import

    return run_recipe(load_recipe(DIGITS, FAST), reports=tmp_path_factory.mktemp("reports"))


@pytest.fixture
def golden(tmp_path: Path) -> RunDir:
    """A writable copy of the golden v1 run (rendering writes report.html beside its data)."""
    target = tmp_path / "golden" / "digits-cpu" / GOLDEN_RUN.name
    shutil.copytree(GOLDEN_RUN, target)
    return RunDir(target)
