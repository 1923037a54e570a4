"""Datasets and metrics.

``load_dataset(spec, model)`` dispatches on ``spec.source`` (``example``, ``npz``, ``custom``, ``text``,
``images`` or a plugin under the ``workbench.datasets`` entry point group); ``source: example`` takes its name
from the model's example unless the data spec names one, ``text`` its tokenizer from an ``hf`` model and
``images`` its input name from the model's inputs.
"""

from __future__ import annotations

import logging
from pathlib import Path

# Importing the source modules registers them.
from workbench.data import example_source, files, images, text  # noqa: F401
from workbench.data.base import DATASET_SOURCES, METRICS, Arrays, Dataset, Metric, arrays_digest
from workbench.errors import MissingDependencyError, UsageError, WorkbenchError
from workbench.paths import cache_dir
from workbench.recipe.spec import DataSpec, ModelSpec

__all__ = ["DATASET_SOURCES", "METRICS", "Arrays", "Dataset", "Metric", "arrays_digest", "load_dataset"]

logger = logging.getLogger(__name__)


def load_dataset(spec: DataSpec, model: ModelSpec, cache: Path | None = None) -> Dataset:
    """The evaluation data for ``model``, at most ``spec.limit`` samples."""
    spec = images.with_model_input(text.with_model_tokenizer(_with_example_name(spec, model), model), model)
    source = DATASET_SOURCES.get(spec.source)
    try:
        dataset = source(spec, cache or cache_dir())
    except WorkbenchError:
        raise
    except ImportError as exc:
        raise MissingDependencyError(f"dataset source {spec.source!r} needs a missing package: {exc}") from exc
    except (OSError, ValueError, RuntimeError, TypeError, KeyError) as exc:
        logger.debug("dataset source %r failed", spec.source, exc_info=True)
        raise UsageError(f"dataset source {spec.source!r}: {_first_line(exc)}") from exc
    return dataset.take(spec.limit) if spec.limit else dataset


def _with_example_name(spec: DataSpec, model: ModelSpec) -> DataSpec:
    if spec.source != "example" or spec.name:
        return spec
    if model.source != "example":
        raise UsageError("data.source 'example' needs data.name when the model is not an example")
    return spec.model_copy(update={"name": model.name})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
