"""Datasets and metrics.

A Dataset is arrays named like the model's inputs (N samples, batch first) and optional labels.
A Metric scores a variant's outputs on the whole evaluation set; ``higher_is_better`` tells the
quality check which way a drop goes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.recipe.spec import DataSpec
from workbench.registry import Registry

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Dataset:
    """Evaluation inputs (and labels), plus ``calibration``: held-out inputs that are never scored.

    Static quantization calibrates on ``calibration`` so that the accuracy it is judged on is not
    measured on the samples that set its ranges. ``take(n)`` keeps the samples after the first ``n``
    as the calibration set when the source gave none.
    """

    inputs: Arrays
    labels: np.ndarray | None = None
    calibration: Arrays | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, count: int) -> Dataset:
        labels = None if self.labels is None else self.labels[:count]
        calibration = self.calibration
        if calibration is None and count < len(self):
            calibration = {k: v[count:] for k, v in self.inputs.items()}
        return Dataset({k: v[:count] for k, v in self.inputs.items()}, labels, calibration)

    def batch(self, start: int, size: int) -> Arrays:
        """``size`` samples from ``start``, wrapping around so any batch size can be served."""
        index = np.arange(start, start + size) % len(self)
        return {k: np.ascontiguousarray(v[index]) for k, v in self.inputs.items()}

    def batches(self, size: int) -> Iterator[Arrays]:
        for start in range(0, len(self), size):
            yield {k: v[start : start + size] for k, v in self.inputs.items()}


@dataclass(frozen=True)
class Metric:
    """``score(outputs, reference, labels) -> float`` over the whole evaluation set; ``output`` names the
    model output it reads (None: the metric reads them all, or the first)."""

    name: str
    higher_is_better: bool
    score: Callable[[Arrays, Arrays, np.ndarray | None], float]
    output: str | None = None


# A dataset source: (spec, cache directory) -> Dataset.
DatasetSource = Callable[[DataSpec, Path], Dataset]
DATASET_SOURCES: Registry[DatasetSource] = Registry("datasets", builtins="workbench.data")
METRICS: Registry[Metric] = Registry("metrics", builtins="workbench.data.metrics")


def arrays_digest(batches: Iterable[Arrays]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of some batches: what a cache key needs of data."""
    digest = hashlib.sha256()
    for batch in batches:
        for name in sorted(batch):
            array = np.ascontiguousarray(batch[name])
            digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
            digest.update(array.data)
    return digest.hexdigest()
