"""The search space: build pipelines × serving settings, expanded into variants (grid).

The baseline pipeline comes first, so a run always has its reference figures even when it is
interrupted early. Each variant is an independent job, keyed by a stable id, which is what lets
``--resume`` skip the finished ones.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from serving_harness.config import RuntimeName, ServingConfig
from workbench.errors import RecipeError
from workbench.recipe.spec import Recipe, StepSpec
from workbench.sweep.cache import validate_step


@dataclass(frozen=True)
class Variant:
    """One point of the search space.

    ``serving`` is the recipe's base with the grid point set; a ``runtime.name`` neither gave is not set
    (``runtime_named``) and comes from the artifact (``with_runtime``).
    """

    id: str
    pipeline: str
    steps: tuple[StepSpec, ...]
    serving: ServingConfig
    grid_point: dict[str, Any]
    is_baseline: bool


def runtime_named(serving: ServingConfig) -> bool:
    """Whether the recipe named the runtime (else the artifact's format picks it)."""
    return "name" in serving.runtime.model_fields_set


def with_runtime(serving: ServingConfig, default: RuntimeName) -> ServingConfig:
    """``serving`` as a variant runs it: the recipe's runtime, or ``default`` when the recipe named none."""
    if runtime_named(serving):
        return serving
    return serving.model_copy(update={"runtime": serving.runtime.model_copy(update={"name": default})})


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = target
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


def _grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())] or [{}]


def _variant_id(pipeline: str, point: dict[str, Any], multi: bool) -> str:
    if not multi:
        return pipeline
    return pipeline + "@" + ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point.items())


def _serving_fields(recipe: Recipe, point: dict[str, Any]) -> ServingConfig:
    """The base with the grid point's dotted keys set; only what either gave is set (``runtime_named``)."""
    fields: dict[str, Any] = recipe.search.serving.base.model_dump(mode="json", exclude_unset=True)
    for dotted, value in point.items():
        _set_dotted(fields, dotted, value)
    try:
        return ServingConfig.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = "search.serving." + ".".join(str(p) for p in first["loc"])
        raise RecipeError(first["msg"], key=key) from None


def expand(recipe: Recipe) -> list[Variant]:
    """Every variant of the recipe, baseline pipeline first; step configs are validated here."""
    for pipeline in recipe.search.pipelines:
        for index, step in enumerate(recipe.search.steps_of(pipeline)):
            validate_step(step, where=f"search.pipelines.{pipeline}.{index}")
    baseline = recipe.search.baseline_name()
    order = [baseline, *(p for p in recipe.search.pipelines if p != baseline)]
    points = _grid_points(recipe.search.serving.grid)
    multi = len(points) > 1
    return [
        Variant(
            id=_variant_id(pipeline, point, multi),
            pipeline=pipeline,
            steps=recipe.search.steps_of(pipeline),
            serving=_serving_fields(recipe, point),
            grid_point=point,
            is_baseline=pipeline == baseline,
        )
        for pipeline in order
        for point in points
    ]
