"""Search strategies: which variant to evaluate next, given what has been measured.

``grid`` walks every variant in order (baseline first). ``optuna`` treats the pipeline and each
serving-grid key as categorical choices and asks Optuna's sampler (TPE by default, one objective or
several) for the next point, within ``search.budget`` variants. Both speak the same ask/tell loop, so
the runner does not know which one it drives, and both can be told about variants finished in an
earlier, interrupted run (``--resume``) without evaluating them again.

Infeasible variants (failed build, rejected by the accuracy budget or the latency bound) are told to
Optuna as failed trials: the sampler learns to avoid that region and they never get a value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, Protocol

import pandas as pd

from workbench.decide.select import select_best
from workbench.errors import MissingDependencyError
from workbench.metrics import column_name, higher_is_better
from workbench.recipe.spec import ObjectiveSpec, Recipe
from workbench.report.schema import VariantRecord
from workbench.report.table import records_to_frame
from workbench.sweep.space import Variant

logger = logging.getLogger(__name__)

PIPELINE_PARAM = "pipeline"
# Optuna may suggest a point already evaluated (the space is small and categorical); after this many
# repeats in a row the next unevaluated variant in grid order is taken instead.
MAX_REPEATS = 20


class Search(Protocol):
    """The ask/tell loop the runner drives."""

    budget: int

    def ask(self) -> Variant | None:
        """The next variant to evaluate, or None when the search is over."""
        ...

    def tell(self, variant: Variant, record: VariantRecord) -> None:
        """What evaluating ``variant`` gave (also used to replay a resumed run's finished variants)."""
        ...


def make_search(recipe: Recipe, variants: list[Variant]) -> Search:
    budget = min(recipe.search.budget or len(variants), len(variants))
    if recipe.search.strategy == "optuna":
        return OptunaSearch(recipe, variants, budget)
    return GridSearch(variants, budget)


class GridSearch:
    """Every variant in order (baseline first), up to the budget."""

    def __init__(self, variants: list[Variant], budget: int) -> None:
        self.budget = budget
        self._pending = list(variants)
        self._told: set[str] = set()

    def ask(self) -> Variant | None:
        while self._pending and len(self._told) < self.budget:
            variant = self._pending.pop(0)
            if variant.id not in self._told:
                return variant
        return None

    def tell(self, variant: Variant, record: VariantRecord) -> None:
        self._told.add(variant.id)


class OptunaSearch:
    """Optuna's ask/tell over the pipeline × serving grid; the baseline always runs first."""

    def __init__(self, recipe: Recipe, variants: list[Variant], budget: int) -> None:
        try:
            import optuna
        except ImportError as exc:  # pragma: no cover - optuna is a core dependency
            raise MissingDependencyError("search.strategy optuna needs optuna: pip install optuna") from exc
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self.budget = budget
        self._variants = variants
        self._by_point = {self._key(v.pipeline, v.grid_point): v for v in variants}
        self._distributions = self._space(recipe, variants)
        self._metrics = recipe.search.optuna.objectives or [_objective_metric(recipe.objective)]
        self._value: Callable[[VariantRecord], list[float] | None] = lambda r: _values(r, recipe, self._metrics)
        directions: list[Literal["maximize", "minimize"]] = [
            "maximize" if higher_is_better(m) else "minimize" for m in self._metrics
        ]
        self._study = optuna.create_study(directions=directions, sampler=self._sampler(recipe, len(directions)))
        self._done: dict[str, VariantRecord] = {}
        self._pending: dict[str, Any] = {}
        self._baseline = next(v for v in variants if v.is_baseline)

    @staticmethod
    def _key(pipeline: str, point: dict[str, Any]) -> tuple[str, ...]:
        return (pipeline, *(repr(point[k]) for k in sorted(point)))

    def _space(self, recipe: Recipe, variants: list[Variant]) -> dict[str, Any]:
        dist = self._optuna.distributions.CategoricalDistribution
        space: dict[str, Any] = {PIPELINE_PARAM: dist(list(recipe.search.pipelines))}
        for key, values in recipe.search.serving.grid.items():
            space[key] = dist([repr(v) for v in values])
        return space

    def _sampler(self, recipe: Recipe, objectives: int) -> Any:
        spec = recipe.search.optuna
        samplers = self._optuna.samplers
        if spec.sampler == "random":
            return samplers.RandomSampler(seed=spec.seed)
        if spec.sampler == "nsga2":
            return samplers.NSGAIISampler(seed=spec.seed)
        return samplers.TPESampler(seed=spec.seed, n_startup_trials=spec.startup_trials, multivariate=objectives > 1)

    def ask(self) -> Variant | None:
        if len(self._done) >= self.budget:
            return None
        if self._baseline.id not in self._done:
            return self._baseline
        for _ in range(MAX_REPEATS):
            trial = self._study.ask(self._distributions)
            variant = self._variant_of(trial.params)
            if variant.id not in self._done:
                self._pending[variant.id] = trial  # told in tell() once measured
                return variant
            self._tell_trial(trial, self._done[variant.id])  # a repeat: answer from what was measured
        return next((v for v in self._variants if v.id not in self._done), None)

    def tell(self, variant: Variant, record: VariantRecord) -> None:
        self._done[variant.id] = record
        if (pending := self._pending.pop(variant.id, None)) is not None:
            self._tell_trial(pending, record)
            return
        # The baseline, a fallback pick or a variant replayed from an interrupted run: add it as a finished trial.
        params = {PIPELINE_PARAM: variant.pipeline, **{k: repr(v) for k, v in variant.grid_point.items()}}
        values = self._value(record)
        trial = self._optuna.trial.create_trial(
            params=params,
            distributions=self._distributions,
            values=values,
            state=self._optuna.trial.TrialState.COMPLETE if values else self._optuna.trial.TrialState.FAIL,
        )
        self._study.add_trial(trial)

    def _tell_trial(self, trial: Any, record: VariantRecord) -> None:
        values = self._value(record)
        if values:
            self._study.tell(trial, values)
        else:
            self._study.tell(trial, state=self._optuna.trial.TrialState.FAIL)

    def _variant_of(self, params: dict[str, Any]) -> Variant:
        point = {k: v for k, v in params.items() if k != PIPELINE_PARAM}
        key = (params[PIPELINE_PARAM], *(point[k] for k in sorted(point)))
        return self._by_point[key]


def _objective_metric(objective: ObjectiveSpec) -> str:
    return column_name(objective.maximize or objective.minimize or "")


def _values(record: VariantRecord, recipe: Recipe, metrics: list[str]) -> list[float] | None:
    """The variant's figure for each metric (as selection would rank it), or None if infeasible."""
    if record.status != "ok":
        return None
    frame: pd.DataFrame = records_to_frame("search", [record])
    values: list[float] = []
    for metric in metrics:
        up = higher_is_better(metric)
        objective = ObjectiveSpec(
            maximize=metric if up else None, minimize=None if up else metric, batch_size=recipe.objective.batch_size
        )
        chosen = select_best(frame, recipe.constraints, objective)
        if chosen is None:
            return None
        values.append(chosen.value)
    return values
