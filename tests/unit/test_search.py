"""Search strategies: grid order and budget; Optuna's ask/tell with the baseline first, no repeats,
infeasible variants told as failures, and a resumed run's variants replayed instead of re-run."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from serving_harness.config import ServingConfig
from workbench.recipe.loader import load_recipe
from workbench.recipe.spec import Recipe
from workbench.report.schema import Measurement, Quality, VariantRecord
from workbench.sweep.space import Variant, expand
from workbench.sweep.strategies import OptunaSearch, Search, make_search

RECIPE = """
name: space
model: {source: example, name: digits}
search:
  strategy: optuna
  budget: 5
  pipelines:
    base: []
    a: [export.onnx]
    b: [export.onnx]
    c: [export.onnx]
  serving:
    grid: {runtime.intra_op_threads: [1, 2]}
constraints: {accuracy_drop: {max: 0.01}}
objective: {maximize: throughput_items_per_s, batch_size: 8}
"""


def recipe(tmp_path: Path, *overrides: str) -> Recipe:
    path = tmp_path / "space.yaml"
    path.write_text(RECIPE)
    return load_recipe(path, overrides)


def record(variant: Variant, *, throughput: float, drop: float = 0.0) -> VariantRecord:
    status = "ok" if drop <= 0.01 else "rejected"
    measurement = Measurement(
        mode="inprocess",
        case="b8",
        batch_size=8,
        iterations=100,
        trials=3,
        latency_ms={"p50": 1.0, "p99": 2.0},
        throughput_rps=throughput / 8,
        throughput_items_per_s=throughput,
    )
    return VariantRecord(
        variant=variant.id,
        pipeline=variant.pipeline,
        is_baseline=variant.is_baseline,
        steps=[],
        serving=ServingConfig(),
        serving_label="",
        runtime="onnxruntime",
        status=status,
        quality=Quality(metric="accuracy", value=0.98 - drop, baseline=0.98, drop=drop, drop_rel=drop / 0.98),
        measurements=[measurement] if status == "ok" else [],
    )


def drive(search: Search, score: dict[str, float]) -> list[str]:
    asked: list[str] = []
    while (variant := search.ask()) is not None:
        asked.append(variant.id)
        search.tell(variant, record(variant, throughput=score.get(variant.pipeline, 100.0)))
    return asked


def test_grid_asks_every_variant_baseline_first_within_budget(tmp_path: Path) -> None:
    spec = recipe(tmp_path, "search.strategy=grid", "search.budget=null")
    variants = expand(spec)
    assert drive(make_search(spec, variants), {}) == [v.id for v in variants]
    limited = make_search(recipe(tmp_path, "search.strategy=grid", "search.budget=3"), variants)
    assert drive(limited, {}) == [v.id for v in variants[:3]]


def test_optuna_runs_baseline_first_and_never_repeats_a_variant(tmp_path: Path) -> None:
    spec = recipe(tmp_path)
    variants = expand(spec)
    search = make_search(spec, variants)
    assert isinstance(search, OptunaSearch)
    asked = drive(search, {"a": 500.0, "b": 300.0, "c": 200.0})
    assert asked[0] == variants[0].id and variants[0].is_baseline
    assert len(asked) == 5 == len(set(asked))
    trials = search._study.get_trials(deepcopy=False)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials) and len(trials) >= 5


def test_optuna_budget_larger_than_space_evaluates_each_once(tmp_path: Path) -> None:
    spec = recipe(tmp_path, "search.budget=100")
    variants = expand(spec)
    asked = drive(make_search(spec, variants), {})
    assert sorted(asked) == sorted(v.id for v in variants)


def test_infeasible_variants_are_failed_trials(tmp_path: Path) -> None:
    spec = recipe(tmp_path)
    variants = expand(spec)
    search = OptunaSearch(spec, variants, budget=3)
    baseline = search.ask()
    assert baseline is not None
    search.tell(baseline, record(baseline, throughput=100.0, drop=0.5))
    (trial,) = search._study.get_trials(deepcopy=False)
    assert trial.state == optuna.trial.TrialState.FAIL and trial.values is None


def test_resumed_variants_are_replayed_not_asked_again(tmp_path: Path) -> None:
    spec = recipe(tmp_path)
    variants = expand(spec)
    search = OptunaSearch(spec, variants, budget=5)
    earlier = variants[:3]
    for variant in earlier:
        search.tell(variant, record(variant, throughput=100.0))
    asked = drive(search, {})
    assert len(asked) == 2 and not set(asked) & {v.id for v in earlier}


@pytest.mark.parametrize("objectives", [["throughput_items_per_s", "accuracy_drop"]])
def test_multi_objective_directions_follow_the_metrics(tmp_path: Path, objectives: list[str]) -> None:
    spec = recipe(tmp_path, f"search.optuna.objectives={objectives}")
    search = OptunaSearch(spec, expand(spec), budget=4)
    assert search._study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    asked = drive(search, {"a": 400.0})
    assert len(asked) == 4
    assert {t.number for t in search._study.best_trials}  # a Pareto front exists


def test_a_cosine_constraint_reads_the_quality_column_of_its_name(tmp_path: Path) -> None:
    from workbench.decide.select import select_best
    from workbench.report.table import records_to_frame

    spec = recipe(tmp_path, "constraints={cosine: {min: 0.98}}")
    variants = expand(spec)
    good, bad = record(variants[0], throughput=100.0), record(variants[1], throughput=900.0)
    good = good.model_copy(update={"quality": good.quality.model_copy(update={"metric": "cosine", "value": 0.99})})  # type: ignore[union-attr]
    bad = bad.model_copy(update={"quality": bad.quality.model_copy(update={"metric": "cosine", "value": 0.95})})  # type: ignore[union-attr]
    frame = records_to_frame("r", [good, bad])
    assert list(frame["cosine"]) == [0.99, 0.95]
    chosen = select_best(frame, spec.constraints, spec.objective)
    assert chosen is not None and chosen.variant == good.variant
