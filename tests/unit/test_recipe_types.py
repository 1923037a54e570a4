"""The recipe keeps its types: ``search.serving.base`` is a ServingConfig holding only what the recipe gave,
``load.profile`` a LoadProfile, and both survive the JSON a run records (``run.json``) unchanged in meaning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving_harness.config import ServingConfig
from workbench.recipe.loader import load_recipe, spec_hash
from workbench.recipe.profiles import ConcurrencyProfile, SlaSearchProfile
from workbench.recipe.spec import Recipe
from workbench.sweep.space import expand, runtime_named, with_runtime

ROOT = Path(__file__).parents[2]
GOLDEN_RUN = ROOT / "tests" / "report" / "golden" / "v1" / "digits-cpu" / "0001-20261123T234441Z"
RECIPE = """
name: typed
model: {source: example, name: digits}
search:
  pipelines:
    torch-eager: []
    ort-fp32: [export.onnx]
  serving:
    base: {runtime: {intra_op_threads: 2}, batching: {max_batch_size: 8}}
    grid: {instances: [1, 2]}
load: {enabled: true, profile: {kind: sla_search, latency_ms_max: 20}}
"""


@pytest.fixture
def recipe(tmp_path: Path) -> Recipe:
    path = tmp_path / "typed.yaml"
    path.write_text(RECIPE)
    return load_recipe(path)


def test_serving_base_and_load_profile_are_typed(recipe: Recipe) -> None:
    base = recipe.search.serving.base
    assert isinstance(base, ServingConfig) and base.runtime.intra_op_threads == 2 and base.batching.max_batch_size == 8
    assert not runtime_named(base)  # the artifact picks it
    profile = recipe.load.profile
    assert (
        isinstance(profile, SlaSearchProfile) and profile.latency_ms_max == 20 and profile.latency_percentile == "p99"
    )


def test_a_named_profile_is_inlined_typed() -> None:
    profile = load_recipe(ROOT / "recipes" / "digits-cpu.yaml").load.profile
    assert isinstance(profile, ConcurrencyProfile) and profile.users == (1, 4)


def test_the_recorded_recipe_means_the_same_when_read_back(recipe: Recipe) -> None:
    """run.json records the recipe as JSON, and ``workbench export`` validates it again: a base that came back
    with every default set would name onnxruntime, and the torch variant would be served by the wrong runtime."""
    recorded = json.loads(json.dumps(recipe.model_dump(mode="json")))
    assert recorded["search"]["serving"]["base"] == {
        "runtime": {"intra_op_threads": 2},
        "batching": {"max_batch_size": 8},
    }
    again = Recipe.model_validate(recorded)
    assert again.model_dump() == recipe.model_dump() and spec_hash(again) == spec_hash(recipe)
    assert not runtime_named(again.search.serving.base)


def test_variants_take_the_artifacts_runtime_unless_the_recipe_names_one(recipe: Recipe, tmp_path: Path) -> None:
    torch_eager = next(v for v in expand(recipe) if v.pipeline == "torch-eager" and v.serving.instances == 2)
    served = with_runtime(torch_eager.serving, "torch")
    assert served.runtime.name == "torch" and served.runtime.intra_op_threads == 2 and served.instances == 2
    path = tmp_path / "named.yaml"
    path.write_text(RECIPE.replace("{intra_op_threads: 2}", "{name: onnxruntime, intra_op_threads: 2}"))
    named = expand(load_recipe(path))[0].serving
    assert runtime_named(named) and with_runtime(named, "torch").runtime.name == "onnxruntime"


def test_the_golden_v1_runs_recipe_validates_typed() -> None:
    recorded = json.loads((GOLDEN_RUN / "run.json").read_text())["recipe"]
    recipe = Recipe.model_validate(recorded)
    assert isinstance(recipe.load.profile, ConcurrencyProfile) and recipe.load.profile.users == (1, 4)
    assert recipe.search.serving.base.runtime.intra_op_threads == 1
    assert _holds(recipe.model_dump(mode="json"), recorded)  # every key v1 wrote reads back the same (v2 adds defaults)


def _holds(written: object, recorded: object) -> bool:
    """``written`` has every key of ``recorded`` with the same value (new keys with defaults may be added)."""
    if isinstance(recorded, dict):
        return isinstance(written, dict) and all(k in written and _holds(written[k], v) for k, v in recorded.items())
    return written == recorded
