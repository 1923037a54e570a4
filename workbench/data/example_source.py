"""``source: example``: the bundled examples' data, looked up in :data:`workbench.examples.EXAMPLES`."""

from __future__ import annotations

from pathlib import Path

from workbench.data.base import DATASET_SOURCES, Dataset
from workbench.examples import get_example
from workbench.recipe.spec import DataSpec


@DATASET_SOURCES.register("example")
def example_dataset(spec: DataSpec, cache: Path) -> Dataset:
    """Dispatch ``source: example`` on ``name`` (``load_dataset`` fills it from the model)."""
    return get_example(spec.name).data(spec)
