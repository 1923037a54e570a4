"""What a bundle carries to check itself where it lands: golden outputs and a drift baseline.

Both come from the recipe's own data, run through the shipped artifact with the shipped runtime
settings. Golden rows are spread over the dataset; their tolerances scale with each output's
magnitude, looser for quantized artifacts, whose integer kernels differ between CPU generations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving_harness.config import ServingConfig
from serving_harness.drift import DriftBaseline, build_baseline
from serving_harness.runtimes import RuntimeUnavailable, create_runtime
from serving_harness.runtimes.base import ModelMetadata, Runtime
from workbench.data.base import Arrays, Dataset
from workbench.errors import MissingDependencyError, UsageError
from workbench.sweep.quality import run_dataset

__all__ = ["GOLDEN_ROWS", "Golden", "golden_set", "load_runtime", "tolerances"]

GOLDEN_ROWS = 16
FP32_TOLERANCE = 1e-4  # relative to each output's largest magnitude: kernel and summation order differences
QUANTIZED_TOLERANCE = 1e-2


@dataclass(frozen=True)
class Golden:
    """Golden inputs, the outputs they gave here, and the tolerances to check them with."""

    inputs: Arrays
    outputs: Arrays
    rtol: float
    atol: dict[str, float]


def load_runtime(artifact: Path, settings: ServingConfig) -> tuple[Runtime, ModelMetadata]:
    """The artifact loaded as the harness will load it."""
    runtime = create_runtime(settings.runtime.name)
    try:
        metadata = runtime.load(artifact, settings.runtime)
    except RuntimeUnavailable as exc:
        raise MissingDependencyError(str(exc)) from exc
    return runtime, metadata


def golden_inputs(dataset: Dataset, rows: int = GOLDEN_ROWS) -> Arrays:
    """``rows`` samples spread evenly over the dataset (not just its first few)."""
    index = np.linspace(0, len(dataset) - 1, num=min(rows, len(dataset))).round().astype(np.int64)
    return {name: np.ascontiguousarray(values[index]) for name, values in dataset.inputs.items()}


def tolerances(outputs: Arrays, *, quantized: bool) -> tuple[float, dict[str, float]]:
    """(rtol, atol per output) for outputs of this size; see the module docstring."""
    share = QUANTIZED_TOLERANCE if quantized else FP32_TOLERANCE
    atol = {name: share * max(1.0, float(np.abs(values).max(initial=0.0))) for name, values in outputs.items()}
    return share, atol


def golden_set(runtime: Runtime, dataset: Dataset, *, quantized: bool) -> Golden:
    """Golden inputs from ``dataset`` and ``runtime``'s outputs for them."""
    inputs = golden_inputs(dataset)
    outputs = {name: np.asarray(values) for name, values in runtime.infer(inputs).items()}
    rtol, atol = tolerances(outputs, quantized=quantized)
    return Golden(inputs=inputs, outputs=outputs, rtol=rtol, atol=atol)


def drift_baseline(runtime: Runtime, dataset: Dataset, batch_size: int) -> DriftBaseline:
    """The distribution of every input and output over the whole dataset."""
    outputs = run_dataset(runtime, dataset, batch_size)
    return build_baseline(dataset.inputs, outputs)


def save_npz(path: Path, arrays: Arrays) -> None:
    """Plain arrays only: object arrays (BYTES tensors) would need pickle to read back, so they are refused."""
    strings = [name for name, values in arrays.items() if np.asarray(values).dtype == object]
    if strings:
        raise UsageError(f"golden tensors {strings} are strings (BYTES): bundles carry numeric golden data only")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, allow_pickle=False, **{name: np.asarray(values) for name, values in arrays.items()})
