"""The bundled examples. Each registers its model and its data together, under one name:

- ``digits``: a small CNN trained in seconds on scikit-learn's 8x8 digits; data: the held-out split.
- ``minilm``: all-MiniLM-L6-v2 sentence embeddings (the ``[hf]`` extra); data: a fixed corpus of sentences.
- ``images``: a tiny ResNet-style CNN on generated colour images; data: PNG files read as ``source: images``.

``source: example`` of the model (``workbench.models``) and of the data (``workbench.data``) both
look up :data:`EXAMPLES`, so an example cannot have one without the other. Importing this package is
cheap: the example modules (torch, scikit-learn, transformers) load on the first lookup. Other
distributions add examples under the entry point group ``workbench.examples``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workbench.errors import UsageError
from workbench.registry import Registry

if TYPE_CHECKING:
    from workbench.data.base import Dataset
    from workbench.models.base import ModelSource
    from workbench.recipe.spec import DataSpec

__all__ = ["EXAMPLES", "Example", "get_example"]


@dataclass(frozen=True)
class Example:
    """A bundled example: the model source that builds its fp32 artifact and the data it is judged on."""

    model: ModelSource
    data: Callable[[DataSpec], Dataset]


# Importing workbench.examples._bundled registers digits, images and minilm.
EXAMPLES: Registry[Example] = Registry("examples", builtins="workbench.examples._bundled")


def get_example(name: str | None) -> Example:
    """The example called ``name``; UsageError listing the examples otherwise."""
    available = EXAMPLES.names()
    if name is None or name not in available:
        raise UsageError(f"unknown example {name!r}; available: {', '.join(available)}")
    return EXAMPLES.get(name)
