"""Request bodies for the load generator: real inputs, encoded once, before the load starts.

The workbench encodes a handful of distinct batches as OIP v2 infer requests (JSON tensors, or the
binary-data extension with binary outputs too) and writes them to ``payloads.bin`` plus an index,
``payloads.json``; each Locust process reads them at start-up and sends them in rotation, so no
encoding runs while the load is measured.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from serving_harness.protocol.codec import encode_infer_request
from serving_harness.runtimes.base import TensorSpec
from workbench.data.base import Arrays, Dataset
from workbench.errors import MeasurementError, UsageError

__all__ = [
    "DISTINCT_BATCHES",
    "PayloadFiles",
    "dataset_batches",
    "fetch_input_specs",
    "npz_batches",
    "random_batches",
    "write_payloads",
]

DISTINCT_BATCHES = 16  # rotate inputs so server-side caches do not flatter the figures
DYNAMIC_AXIS_SIZE = 8  # a random input's non-batch dynamic axes (e.g. a sequence length)
METADATA_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PayloadFiles:
    """The encoded bodies (``bin``) and their offsets and headers (``index``)."""

    bin: Path
    index: Path
    count: int
    bytes_per_request: int


def dataset_batches(dataset: Dataset, batch_size: int, count: int = DISTINCT_BATCHES) -> list[Arrays]:
    """``count`` distinct batches of real inputs (wrapping around a small dataset)."""
    distinct = max(1, min(count, len(dataset) // batch_size or 1))
    return [dataset.batch(i * batch_size, batch_size) for i in range(distinct)]


def npz_batches(path: Path, batch_size: int, count: int = DISTINCT_BATCHES) -> list[Arrays]:
    """Batches from an ``.npz`` of arrays named like the model's inputs (``labels`` is ignored)."""
    with np.load(path) as archive:
        inputs = {name: archive[name] for name in archive.files if name != "labels"}
    if not inputs:
        raise UsageError(f"{path} holds no input arrays")
    return dataset_batches(Dataset(inputs), batch_size, count)


def random_batches(specs: Sequence[TensorSpec], batch_size: int, count: int = 4, *, seed: int = 0) -> list[Arrays]:
    """Random inputs shaped like ``specs`` (the batch axis set to ``batch_size``)."""
    rng = np.random.default_rng(seed)
    return [{spec.name: _random_tensor(spec, batch_size, rng) for spec in specs} for _ in range(count)]


def _random_tensor(spec: TensorSpec, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    dims = list(spec.shape) or [-1]
    shape = [batch_size] + [d if d > 0 else DYNAMIC_AXIS_SIZE for d in dims[1:]]
    dtype = spec.numpy_dtype
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 100, size=shape).astype(dtype)  # token ids, class ids: keep them small
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dtype)
    raise UsageError(f"input {spec.name!r} is {spec.datatype}: give real inputs with --data FILE.npz")


def fetch_input_specs(url: str, model: str, *, headers: Mapping[str, str] | None = None) -> list[TensorSpec]:
    """The inputs a served model declares at ``GET /v2/models/{model}``."""
    target = f"{url.rstrip('/')}/v2/models/{model}"
    try:
        response = httpx.get(target, headers=dict(headers or {}), timeout=METADATA_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise MeasurementError(f"cannot reach {target}: {exc}") from exc
    if response.status_code != 200:
        raise MeasurementError(f"{target} answered {response.status_code}: {response.text[:200]}")
    return [
        TensorSpec(name=i["name"], datatype=i["datatype"], shape=tuple(i["shape"])) for i in response.json()["inputs"]
    ]


def write_payloads(batches: Sequence[Arrays], folder: Path, *, binary: bool) -> PayloadFiles:
    """Encode ``batches`` as infer requests into ``folder/payloads.{bin,json}``."""
    folder.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, Any]] = []
    offset = 0
    bin_path, index_path = folder / "payloads.bin", folder / "payloads.json"
    with bin_path.open("wb") as handle:
        for batch in batches:
            body, headers = encode_infer_request(_contiguous(batch), binary_data=binary, binary_data_output=binary)
            handle.write(body)
            entries.append({"offset": offset, "length": len(body), "headers": headers})
            offset += len(body)
    index_path.write_text(json.dumps({"binary": binary, "payloads": entries}))
    return PayloadFiles(bin=bin_path, index=index_path, count=len(entries), bytes_per_request=offset // len(entries))


def _contiguous(batch: Arrays) -> Arrays:
    return {name: np.ascontiguousarray(array) for name, array in batch.items()}
