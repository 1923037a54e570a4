"""The bundled examples: one registry, each example registering its model and its data together."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from workbench.data import Dataset, load_dataset
from workbench.errors import UsageError
from workbench.examples import EXAMPLES, Example, get_example
from workbench.models import load_source_model
from workbench.recipe.spec import DataSpec, ModelSpec


def test_the_bundled_examples_each_bring_model_and_data() -> None:
    assert EXAMPLES.names() == ["digits", "images", "minilm"]
    for name in EXAMPLES.names():
        example = get_example(name)
        assert callable(example.model) and callable(example.data)


def test_model_and_data_sources_look_up_the_same_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = object()
    dataset = Dataset({"x": np.arange(6, dtype=np.float32).reshape(3, 2)})

    def tiny_model(spec: ModelSpec, cache: Path) -> Any:
        return model

    EXAMPLES.names()  # the bundled examples are registered first, so they are not replaced
    monkeypatch.setitem(EXAMPLES._items, "tiny", Example(model=tiny_model, data=lambda spec: dataset))
    spec = ModelSpec(source="example", name="tiny")

    assert load_source_model(spec, tmp_path) is model
    assert load_dataset(DataSpec(), spec, tmp_path) is dataset


def test_an_unknown_example_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown example 'mnist'; available: digits, images, minilm"):
        get_example("mnist")


def test_loading_the_data_package_loads_no_example() -> None:
    probe = "import sys, workbench.data; print([m for m in ('torch', 'workbench.examples.digits') if m in sys.modules])"

    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)

    assert loaded.stdout.strip() == "[]"
