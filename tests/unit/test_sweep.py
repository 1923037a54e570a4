from __future__ import annotations

from pathlib import Path

import pytest

from workbench.errors import RecipeError
from workbench.recipe.loader import load_recipe
from workbench.sweep.space import expand

RECIPE = """
name: grid
model: {source: example, name: digits}
search:
  baseline: ort
  pipelines:
    torch: []
    ort: [export.onnx]
  serving:
    base: {runtime: {inter_op_threads: 1}}
    grid:
      runtime.intra_op_threads: [1, 2]
      batching.max_batch_size: [1, 8]
"""


def test_grid_is_pipelines_times_serving_points_with_baseline_first(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    variants = expand(load_recipe(path))
    assert len(variants) == 8
    assert [v.pipeline for v in variants[:4]] == ["ort"] * 4
    assert all(v.is_baseline for v in variants[:4]) and not any(v.is_baseline for v in variants[4:])
    assert len({v.id for v in variants}) == 8
    assert variants[0].id == "ort@intra_op_threads=1,max_batch_size=1"
    assert variants[3].serving.model_dump(exclude_unset=True) == {
        "runtime": {"inter_op_threads": 1, "intra_op_threads": 2},
        "batching": {"max_batch_size": 8},
    }
    assert variants[3].serving.batching.max_batch_size == 8 and variants[3].serving.runtime.intra_op_threads == 2


def test_bad_serving_value_is_located(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.replace("[1, 8]", "[0, 8]"))
    with pytest.raises(RecipeError, match=r"search\.serving\.batching\.max_batch_size"):
        expand(load_recipe(path))
