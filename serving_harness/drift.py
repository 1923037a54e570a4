"""Input and output drift: PSI of recent requests against a baseline from the recipe's data.

A baseline (``drift/baseline.json`` in a bundle) holds, for every input and output tensor, a set of
*features* and, per feature, bin edges (deciles of the baseline data) and the share of the baseline
that fell in each bin. A tensor's features are its elements when it has at most ``MAX_FEATURES`` of
them per row (digits: 64 pixels), its channels (the mean over the other axes) when it has a channel
axis, else all of its values pooled into one feature (token ids).

The monitor keeps the bin counts of the last ``window_rows`` rows of requests: a request is only
appended to a list, and every ``CHUNK_ROWS`` rows the list is binned with a few array operations (a
fraction of a millisecond). A scrape of ``/metrics`` turns the counts into the population stability
index of the window against the baseline::

    PSI = sum over bins of (live share - baseline share) * ln(live share / baseline share)

PSI below 0.1 is read as no shift, 0.1-0.25 as a moderate shift, above 0.25 as a major one. A
tensor's score is the largest PSI over its features (``stat="max"``) and their mean (``stat="mean"``);
no score is exported until the window holds ``min_rows`` rows (a PSI of a few rows is noise).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DriftBaseline",
    "DriftMonitor",
    "DriftScore",
    "FeatureBins",
    "TensorBaseline",
    "build_baseline",
    "load_baseline",
    "psi",
]

BASELINE_FORMAT: Literal["drift-baseline/1"] = "drift-baseline/1"
MAX_FEATURES = 64  # elements per row up to which every element is its own feature
BINS = 10  # deciles
SHARE_FLOOR = 1e-4  # an empty bin counts as this share: PSI stays finite
CHUNK_ROWS = 64  # requests are binned this many rows at a time: no work per request, no long pause
Reduce = Literal["element", "channel", "value"]
Direction = Literal["input", "output"]
Arrays = Mapping[str, np.ndarray]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeatureBins(_Frozen):
    """Upper bin edges (``x <= edge``; one more bin above the last) and the baseline's share per bin."""

    edges: tuple[float, ...]
    shares: tuple[float, ...]


class TensorBaseline(_Frozen):
    """One tensor: how rows become features, and each feature's bins."""

    name: str
    reduce: Reduce
    features: tuple[FeatureBins, ...]


class DriftBaseline(_Frozen):
    """Every numeric input and output tensor's baseline, and the monitor's settings."""

    format: Literal["drift-baseline/1"] = BASELINE_FORMAT
    rows: int = Field(ge=1, description="Rows of data the baseline was taken from.")
    inputs: tuple[TensorBaseline, ...]
    outputs: tuple[TensorBaseline, ...]
    window_rows: int = Field(default=1000, ge=1, description="Recent rows the live distribution is taken over.")
    min_rows: int = Field(default=200, ge=1, description="Rows needed before a score is exported.")
    psi_warning: float = Field(default=0.25, gt=0, description="The PSI the alert rules fire above.")


@dataclass(frozen=True, slots=True)
class DriftScore:
    """One tensor's PSI over the window: the largest over its features and their mean."""

    direction: Direction
    tensor: str
    psi_max: float
    psi_mean: float


# ------------------------------------------------------------------------------------------------ baseline


def choose_reduce(shape: tuple[int, ...]) -> Reduce:
    """How a tensor of ``shape`` (batch first) becomes features; see the module docstring."""
    per_row = math.prod(shape[1:])
    if per_row <= MAX_FEATURES:
        return "element"
    if len(shape) >= 3 and shape[1] <= MAX_FEATURES:
        return "channel"
    return "value"


def features(array: np.ndarray, reduce: Reduce) -> np.ndarray:
    """``(samples, features)`` float64 values of a batch-first array."""
    rows = array.shape[0] if array.ndim else 1
    values = np.asarray(array, dtype=np.float64)
    if reduce == "element":
        return values.reshape(rows, -1)
    if reduce == "channel":
        channels: np.ndarray = values.reshape(rows, values.shape[1], -1).mean(axis=2)
        return channels
    return values.reshape(-1, 1)


def _bins(column: np.ndarray) -> FeatureBins:
    edges = np.unique(np.quantile(column, np.linspace(0, 1, BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, column, side="left"), minlength=len(edges) + 1)
    shares = counts / max(len(column), 1)
    return FeatureBins(edges=tuple(float(e) for e in edges), shares=tuple(float(s) for s in shares))


def _tensor_baselines(arrays: Arrays) -> tuple[TensorBaseline, ...]:
    found = []
    for name, array in arrays.items():
        if array.dtype == object or array.ndim == 0:
            continue  # strings have no bins; a scalar has no batch axis
        reduce = choose_reduce(array.shape)
        table = features(array, reduce)
        found.append(TensorBaseline(name=name, reduce=reduce, features=tuple(_bins(c) for c in table.T)))
    return tuple(found)


def build_baseline(
    inputs: Arrays, outputs: Arrays, *, window_rows: int = 1000, min_rows: int = 200, psi_warning: float = 0.25
) -> DriftBaseline:
    """A baseline from whole-dataset inputs and the model's outputs on them (batch first)."""
    return DriftBaseline(
        rows=len(next(iter(inputs.values()))),
        inputs=_tensor_baselines(inputs),
        outputs=_tensor_baselines(outputs),
        window_rows=window_rows,
        min_rows=min_rows,
        psi_warning=psi_warning,
    )


def load_baseline(path: Path) -> DriftBaseline:
    """Read a baseline file (plain JSON: nothing is unpickled)."""
    return DriftBaseline.model_validate_json(path.read_bytes())


# ------------------------------------------------------------------------------------------------ scoring


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    e = np.maximum(expected, SHARE_FLOOR)
    a = np.maximum(actual, SHARE_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


class _TensorWindow:
    """One tensor's bin counts over the window, kept current chunk by chunk (bins as padded matrices)."""

    def __init__(self, direction: Direction, baseline: TensorBaseline) -> None:
        self.direction = direction
        self.baseline = baseline
        width = max(len(f.edges) for f in baseline.features)
        self.edges = np.full((len(baseline.features), width), np.inf)  # +inf pads: never exceeded
        shares = np.zeros((len(baseline.features), width + 1))  # padded bins stay empty on both sides
        for index, bins in enumerate(baseline.features):
            self.edges[index, : len(bins.edges)] = bins.edges
            shares[index, : len(bins.shares)] = bins.shares
        self.expected = np.maximum(shares, SHARE_FLOOR)
        self.total = np.zeros(shares.shape, dtype=np.int64)
        self.chunks: deque[np.ndarray] = deque()  # each chunk's counts, aligned with the monitor's chunks

    def add(self, parts: list[np.ndarray]) -> None:
        """Bin one chunk of requests (``parts``: their arrays of this tensor) into the counts."""
        counts = np.zeros(self.total.shape, dtype=np.int64)
        table = features(np.concatenate(parts) if len(parts) > 1 else parts[0], self.baseline.reduce) if parts else None
        if table is not None and table.shape[1] == len(self.edges):  # another shape: no counts, not wrong ones
            counts = self._counts(table)
        self.total += counts
        self.chunks.append(counts)

    def _counts(self, table: np.ndarray) -> np.ndarray:
        count, width = self.edges.shape
        # bin = the number of edges below the value (searchsorted's side="left"), every feature at once;
        # one pass per edge column beats a (rows, features, edges) comparison (less memory traffic)
        bins = np.zeros(table.shape, dtype=np.int64)
        for column in self.edges.T:
            bins += table > column
        flat = (bins + np.arange(count) * (width + 1)).ravel()
        return np.bincount(flat, minlength=count * (width + 1)).reshape(count, width + 1)

    def drop_oldest(self) -> None:
        self.total -= self.chunks.popleft()

    def score(self) -> DriftScore | None:
        """(max, mean) PSI over the features, from the counts of the window."""
        samples = int(self.total[0].sum())
        if samples == 0:
            return None
        actual = np.maximum(self.total / samples, SHARE_FLOOR)
        values = np.sum((actual - self.expected) * np.log(actual / self.expected), axis=1)
        return DriftScore(
            self.direction, self.baseline.name, psi_max=float(values.max()), psi_mean=float(values.mean())
        )


class DriftMonitor:
    """The last ``window_rows`` rows of requests, binned against a baseline.

    ``observe`` runs on the event loop's thread for every answered request and only appends; every
    ``CHUNK_ROWS`` rows the pending requests are binned at once (a fraction of a millisecond), and
    ``scores`` (when ``/metrics`` is scraped, same thread: no lock) only turns counts into PSI.
    """

    def __init__(self, baseline: DriftBaseline) -> None:
        self.baseline = baseline
        self._windows = [_TensorWindow("input", t) for t in baseline.inputs if t.features]
        self._windows += [_TensorWindow("output", t) for t in baseline.outputs if t.features]
        self._pending: list[tuple[Arrays, Arrays]] = []
        self._pending_rows = 0
        self._chunk_rows: deque[int] = deque()
        self._rows = 0  # binned rows in the window

    @property
    def rows(self) -> int:
        """Rows in the window now."""
        return self._rows + self._pending_rows

    def observe(self, inputs: Arrays, outputs: Arrays, rows: int) -> None:
        """Remember one request's inputs and outputs (references, no copies); bin them in chunks."""
        self._pending.append((inputs, outputs))
        self._pending_rows += rows
        if self._pending_rows >= CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        for window in self._windows:
            side = 0 if window.direction == "input" else 1
            name = window.baseline.name
            window.add([arrays[side][name] for arrays in self._pending if name in arrays[side]])
        self._chunk_rows.append(self._pending_rows)
        self._rows += self._pending_rows
        self._pending, self._pending_rows = [], 0
        while self._rows - self._chunk_rows[0] >= self.baseline.window_rows:
            self._rows -= self._chunk_rows.popleft()
            for window in self._windows:
                window.drop_oldest()

    def scores(self) -> Iterator[DriftScore]:
        """PSI of every baseline tensor over the window; nothing until ``min_rows`` rows are in it."""
        if self._pending:
            self._flush()
        if self._rows < self.baseline.min_rows:
            return
        for window in self._windows:
            score = window.score()
            if score is not None:
                yield score
