"""The bundled examples, served by the ``example`` model source: ``digits`` and ``minilm``."""

from __future__ import annotations

from pathlib import Path

from workbench.errors import UsageError
from workbench.models.base import MODEL_SOURCES, ModelSource, SourceModel
from workbench.models.examples.digits import digits_source
from workbench.models.examples.minilm import minilm_source
from workbench.recipe.spec import ModelSpec

EXAMPLES: dict[str, ModelSource] = {"digits": digits_source, "minilm": minilm_source}


@MODEL_SOURCES.register("example")
def example_source(spec: ModelSpec, cache: Path) -> SourceModel:
    """Dispatch ``source: example`` on ``name``."""
    try:
        source = EXAMPLES[spec.name or ""]
    except KeyError:
        raise UsageError(f"unknown example model {spec.name!r}; available: {', '.join(sorted(EXAMPLES))}") from None
    return source(spec, cache)
