"""Datasets the user brings: an ``.npz`` file, or a ``pkg.module:function`` loader."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data.base import DATASET_SOURCES, Arrays, Dataset
from workbench.errors import UsageError
from workbench.recipe.spec import DataSpec
from workbench.registry import import_callable

LABELS_KEY = "labels"


def make_dataset(inputs: Mapping[str, Any], labels: Any, *, where: str) -> Dataset:
    """A Dataset from arrays, checked: at least one input, and every array of the same length."""
    arrays: Arrays = {str(name): np.asarray(value) for name, value in inputs.items()}
    if not arrays:
        raise UsageError(f"{where}: no input arrays")
    label_array = None if labels is None else np.asarray(labels)
    named = {**arrays, LABELS_KEY: label_array} if label_array is not None else arrays
    scalars = [name for name, array in named.items() if array.ndim == 0]
    if scalars:
        raise UsageError(f"{where}: {', '.join(scalars)} must have a sample axis first")
    lengths = {name: len(array) for name, array in named.items()}
    if len(set(lengths.values())) != 1:
        raise UsageError(f"{where}: arrays must share their first (sample) axis; got lengths {lengths}")
    return Dataset(arrays, label_array)


@DATASET_SOURCES.register("npz")
def npz_dataset(spec: DataSpec, cache: Path) -> Dataset:
    """Arrays named like the model inputs, plus ``labels`` if any."""
    path = Path(spec.path or "").expanduser()
    if not spec.path or not path.is_file():
        raise UsageError(f"data.path {spec.path!r}: no such .npz file")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    labels = arrays.pop(LABELS_KEY, None)
    return make_dataset(arrays, labels, where=f"data.path {spec.path}")


@DATASET_SOURCES.register("custom")
def custom_dataset(spec: DataSpec, cache: Path) -> Dataset:
    """``loader(**options)`` returning ``(inputs, labels or None)``."""
    try:
        loader = import_callable(spec.loader or "")
    except UsageError as exc:
        raise UsageError(f"data.loader: {exc}") from None
    result = loader(**spec.options)
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], Mapping)):
        raise UsageError(f"data.loader {spec.loader!r} must return (inputs dict, labels or None)")
    return make_dataset(result[0], result[1], where=f"data.loader {spec.loader}")
