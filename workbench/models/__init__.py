"""Model sources: the fp32 artifact every variant starts from.

``load_source_model(spec)`` dispatches on ``spec.source`` (``example``, ``torch``, ``onnx``, ``hf`` or a
plugin registered under the ``workbench.model_sources`` entry point group).
"""

from __future__ import annotations

import logging
from pathlib import Path

from workbench.errors import MissingDependencyError, UsageError, WorkbenchError

# Importing the source modules registers them.
from workbench.models import example_source, hf_source, onnx_source, torch_source  # noqa: F401
from workbench.models.base import MODEL_SOURCES, SourceModel
from workbench.paths import cache_dir
from workbench.recipe.spec import ModelSpec

__all__ = ["MODEL_SOURCES", "SourceModel", "load_source_model"]

logger = logging.getLogger(__name__)


def load_source_model(spec: ModelSpec, cache: Path | None = None) -> SourceModel:
    """The SourceModel for ``spec``; workbench errors pass through, other failures become one-line errors."""
    source = MODEL_SOURCES.get(spec.source)
    try:
        return source(spec, cache or cache_dir())
    except WorkbenchError:
        raise
    except ImportError as exc:
        raise MissingDependencyError(f"model source {spec.source!r} needs a missing package: {exc}") from exc
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        logger.debug("model source %r failed", spec.source, exc_info=True)
        raise UsageError(f"model source {spec.source!r}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
