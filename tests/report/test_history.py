"""Performance history: change points on simulated series (flat, step, creep), and a history built from
real runs (one real `workbench run`, plus copies of it dated earlier, on this machine and another one),
printed by `workbench history` and written as a static site whose images and links all resolve."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_support import chromium, inspect_page, run_cli
from typer.testing import CliRunner

from workbench.cli import app
from workbench.gate.baseline import promote
from workbench.report.history import (
    Point,
    Series,
    SeriesKey,
    change_points,
    find_change_points,
    load_history,
    regressions_at_head,
)
from workbench.report.rundir import RESULTS_FILE, ReportStore, RunDir, atomic_write

ROOT = Path(__file__).parents[2]
DIGITS = ROOT / "recipes" / "digits-cpu.yaml"
SEEDS = range(200)
NOISE_CV = 0.03  # run-to-run spread of a quiet machine; the shared-machine drift is far larger
TINY_RUN = [
    "--no-load",
    "--set", "measure.trials=3",
    "--set", "measure.trial_duration_s=0.05",
    "--set", "measure.warmup_iters=2",
    "--set", "measure.min_trial_iters=5",
    "--set", "measure.batch_sizes=[1]",
    "--set", "search.baseline=torch-eager",
    "--set", "search.pipelines={torch-eager: []}",
]  # fmt: skip


# --------------------------------------------------------------------------------------------- simulated series


def noisy(seed: int, n: int, *, heavy: bool = False) -> np.ndarray:
    """A flat series around 10 with NOISE_CV noise: Gaussian, or Student-t (3 dof, occasional outliers)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_t(3, n) / np.sqrt(3) if heavy else rng.standard_normal(n)
    return 10.0 * (1.0 + NOISE_CV * noise)


def step(seed: int, n: int = 40, factor: float = 1.15) -> np.ndarray:
    values = noisy(seed, n)
    values[n // 2 :] *= factor
    return values


def creep(seed: int, points_per_level: int = 6) -> np.ndarray:
    """Five +3% steps, ``points_per_level`` runs apart: no single step stands out from the noise."""
    values = noisy(seed, 6 * points_per_level)
    for level in range(1, 6):
        values[level * points_per_level :] *= 1.03
    return values


def commit(index: int) -> str:
    return f"{index:04x}" + "cafe" * 9


def series_of(values: np.ndarray, metric: str = "latency_ms_p50") -> Series:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    points = tuple(Point(f"{i + 1:04d}", start + timedelta(hours=i), commit(i), float(v)) for i, v in enumerate(values))
    return Series(SeriesKey("sim", "v", "inprocess b1", metric, "machine"), "sim machine", points)


@pytest.mark.parametrize("heavy", [False, True], ids=["gaussian", "heavy-tailed"])
def test_a_flat_noisy_series_rarely_has_a_change_point(heavy: bool) -> None:
    false_alarms = sum(bool(find_change_points(noisy(s, 60, heavy=heavy), higher_is_better=False)) for s in SEEDS)
    assert false_alarms / len(SEEDS) <= 0.05


def test_a_15_percent_step_is_found_with_its_magnitude_and_commits() -> None:
    extra = 0
    for seed in range(100):
        found = change_points(series_of(step(seed)))
        (change,) = [c for c in found if abs(c.index - 20) <= 2]
        extra += len(found) - 1
        # its magnitude is the step's, unless a false change point beside it cut a segment short
        assert change.worse and (0.10 < change.relative_change < 0.20 or len(found) > 1)
        assert (change.commit_before, change.commit_after) == (commit(change.index - 1), commit(change.index))
        assert re.fullmatch(
            rf"\+\d+\.\d% worse \({change.index - 1:04x}cafe\.\.{change.index:04x}cafe\)", change.describe()
        )
    assert extra <= 5  # a false change point beside the real one: as rare as on a flat series


def test_a_creep_of_five_3_percent_steps_is_found_in_the_worse_direction() -> None:
    caught = sum(bool(regressions_at_head(series_of(creep(1000 + s)))) for s in SEEDS)
    assert caught / len(SEEDS) >= 0.90


def test_direction_follows_the_metric() -> None:
    slower = step(7, factor=0.85)  # throughput down 15%: worse; the same numbers as latency: better
    assert [c.worse for c in change_points(series_of(slower, "throughput_rps"))] == [True]
    assert [c.worse for c in change_points(series_of(slower, "latency_ms_p50"))] == [False]
    assert regressions_at_head(series_of(slower, "latency_ms_p50")) == []


def test_a_regression_that_was_fixed_is_not_at_head() -> None:
    values = noisy(3, 45)
    values[15:30] *= 1.2
    assert [c.worse for c in change_points(series_of(values))] == [True, False]
    assert regressions_at_head(series_of(values)) == []


def test_only_recent_changes_count_within_the_last_points() -> None:
    regressed = series_of(step(5, n=60))
    assert len(regressions_at_head(regressed)) == 1
    assert regressions_at_head(regressed, within_last=10) == []


@pytest.mark.parametrize(
    "values",
    [[1.0, 2.0, 3.0], [0.0] * 30, [0.98] * 30, [1.0, float("nan")] * 10],
    ids=["short", "zeros", "constant", "nan"],
)
def test_series_without_a_change_point(values: list[float]) -> None:
    assert find_change_points(values, higher_is_better=True) == []


def test_a_step_on_a_noiseless_series_is_found() -> None:
    values = [0.98] * 15 + [0.97] * 15  # accuracy on a fixed test set: no noise, a real one-point drop
    (change,) = find_change_points(values, higher_is_better=True)
    assert change.index == 15 and change.worse


# ------------------------------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real `workbench run`, promoted to baseline; three earlier copies of it (two on this machine,
    one on another) with other commits and slower figures; and one run whose run.json is broken."""
    root = tmp_path_factory.mktemp("reports")
    done = CliRunner().invoke(app, ["run", str(DIGITS), *TINY_RUN, "--reports", str(root)])
    assert done.exit_code == 0, done.output
    (real,) = ReportStore(root).runs("digits-cpu")
    promote(str(real.path), reports=root)
    for days, cpu, factor in ((3, None, 1.0), (2, None, 1.1), (1, "Other CPU", 2.0)):
        _copy_run(real, root, days_before=days, cpu_model=cpu, slower=factor)
    broken = ReportStore(root).new_run("digits-cpu")
    (broken.path / "run.json").write_text("{not json")
    return root


def _copy_run(real: RunDir, root: Path, *, days_before: int, cpu_model: str | None, slower: float) -> RunDir:
    source = real.read_envelope()
    created = source.created - timedelta(days=days_before)
    run = ReportStore(root).new_run("digits-cpu", created)
    shutil.copytree(real.path, run.path, dirs_exist_ok=True)
    environment = {**source.environment, "git": {"commit": f"{days_before:02d}" * 20, "dirty": False}}
    if cpu_model:
        environment["cpu"] = {**environment["cpu"], "model": cpu_model}
    run.write_envelope(source.model_copy(update={"run_id": run.run_id, "created": created, "environment": environment}))
    frame = pd.read_parquet(real.path / RESULTS_FILE).assign(run_id=run.run_id)
    frame["latency_ms_p50"] *= slower
    atomic_write(run.path / RESULTS_FILE, frame.to_parquet(index=False), overwrite=True)
    return run


def test_history_splits_by_machine_and_skips_unreadable_runs(reports: Path) -> None:
    history = load_history(reports, "digits-cpu", metrics=["latency_ms.p50"], variants=["torch-eager"])
    lines = [s for s in history.series if s.key.case == "inprocess b1"]
    assert sorted(len(s.points) for s in lines) == [1, 3]  # the baseline is the real run: not counted twice
    here = max(lines, key=lambda s: len(s.points))
    assert [p.commit[:2] for p in here.points if p.commit][:2] == ["03", "02"]
    assert here.points[-1].report is not None and here.points[-1].report.name == "report.html"
    assert "Other CPU" in min(lines, key=lambda s: len(s.points)).hardware_label
    assert len(history.skipped) == 1 and "run.json" in history.skipped[0]


def test_history_command_prints_the_table_and_writes_a_site(reports: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    args = ["history", "digits-cpu", "--metric", "latency_ms.p50", "--reports", str(reports), "--out", str(site)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "torch-eager · inprocess b1 · latency_ms_p50" in done.output
    pages = [site / "index.html", site / "digits-cpu.html"]
    assert all(page.exists() for page in pages)
    images = re.findall(r'<img src="([^"]+)"', pages[1].read_text())
    assert images and all((site / image).stat().st_size > 0 for image in images)
    links = [href for page in pages for href in re.findall(r'href="([^"#]+)"', page.read_text())]
    assert any(link.endswith("report.html") for link in links)
    assert all((site / link).is_file() for link in links), links


def test_an_unknown_metric_is_bad_input(reports: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_cli(monkeypatch, "history", "--metric", "latency_s.p42", "--reports", str(reports)) == 2


@pytest.mark.skipif(chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_the_site_opens_in_a_browser_with_every_image_loaded(reports: Path, tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["history", "--reports", str(reports), "--out", str(tmp_path / "site")])
    assert done.exit_code == 0, done.output
    page = inspect_page(tmp_path / "site" / "digits-cpu.html")
    assert page.errors == []
    assert page.images and all(image["complete"] and image["width"] > 0 for image in page.images)


def flicker(seed: int, n: int = 40, *, share: float = 0.15) -> np.ndarray:
    """A p50 of ~17 µs recorded in whole µs (as ms): mostly 0.017, now and then 0.018 (the real run-to-run
    noise is below the resolution, so the series flickers between two neighbouring values)."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < share, 0.018, 0.017)


def test_a_series_flickering_at_its_resolution_has_no_change_point() -> None:
    false_alarms = sum(bool(find_change_points(flicker(s), higher_is_better=False)) for s in SEEDS)
    assert false_alarms / len(SEEDS) <= 0.05  # measured by benchmarks/history_changepoints.py: 36% before


def test_a_step_of_several_resolution_units_on_a_flickering_series_is_found() -> None:
    found = 0
    for seed in range(100):
        values = flicker(seed)
        values[20:] += 0.003  # 17 µs -> 20 µs
        found += [c.worse for c in find_change_points(values, higher_is_better=False)] == [True]
    assert found >= 95
