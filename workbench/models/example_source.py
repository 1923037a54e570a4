"""``source: example``: the bundled examples' models, looked up in :data:`workbench.examples.EXAMPLES`."""

from __future__ import annotations

from pathlib import Path

from workbench.examples import get_example
from workbench.models.base import MODEL_SOURCES, SourceModel
from workbench.recipe.spec import ModelSpec


@MODEL_SOURCES.register("example")
def example_source(spec: ModelSpec, cache: Path) -> SourceModel:
    """Dispatch ``source: example`` on ``name`` (digits, minilm)."""
    return get_example(spec.name).model(spec, cache)
