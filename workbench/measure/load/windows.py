"""From per-request records to windows, a stability verdict and a step's figures.

A step's records are cut into windows of ``window_s`` by completion instant, after the warm-up.
The step has settled when its last ``min_windows`` windows agree: each window's throughput lies
within ``tolerance`` of their mean, and so does each window's p99 within ``latency_tolerance``. A
window too small for a p99 (``stats.MIN_SAMPLES``) is compared on the highest percentile it can
carry, so a slow step still settles on what it can measure; the reported figures come from the
pooled windows and never show a percentile from fewer requests than it needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.measure.load.wire import FLAG_WAITED_FOR_SLOT, RECORD_DTYPE, Kind
from workbench.stats import MIN_SAMPLES, PERCENTILES, bootstrap_ci, latency_summary_ms

__all__ = ["RecordTail", "StepFigures", "Window", "cut_windows", "intended_window", "settled", "summarize"]

LATE_SEND_NS = 5_000_000  # an open-loop send more than 5 ms after its intended instant is late
LATE_SHARE_BEHIND = 0.05  # ...and a step where over 5% were late (with slots free) had a generator behind


class RecordTail:
    """Reads the records the Locust processes append to ``folder/*.bin``, a whole record at a time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._offsets: dict[Path, int] = {}
        self._chunks: list[np.ndarray] = []

    def poll(self) -> int:
        """Read what was appended since the last poll; return how many records came."""
        fresh = 0
        for path in sorted(self.folder.glob("*.bin")) if self.folder.exists() else []:
            fresh += self._read(path)
        return fresh

    def _read(self, path: Path) -> int:
        offset = self._offsets.get(path, 0)
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
        whole = len(data) - len(data) % RECORD_DTYPE.itemsize
        if whole:
            self._chunks.append(np.frombuffer(data[:whole], dtype=RECORD_DTYPE).copy())
            self._offsets[path] = offset + whole
        return whole // RECORD_DTYPE.itemsize

    def records(self) -> np.ndarray:
        """Every record read so far, in file order."""
        if not self._chunks:
            return np.empty(0, dtype=RECORD_DTYPE)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0]

    @property
    def sources(self) -> int:
        """How many generator processes have written records."""
        return len(self._offsets)


@dataclass(frozen=True)
class Window:
    """One window of a step: requests that completed in ``[start_ns, end_ns)``."""

    index: int
    start_ns: int
    end_ns: int
    ok: int
    errors: int
    throughput_rps: float
    latency_ms: float | None  # the highest percentile the window can carry...
    percentile: str  # ...and which one it is

    def as_dict(self) -> dict[str, float | int | str | None]:
        return {
            "index": self.index,
            "ok": self.ok,
            "errors": self.errors,
            "throughput_rps": round(self.throughput_rps, 3),
            f"latency_ms_{self.percentile}": self.latency_ms,
        }


def _in_range(records: np.ndarray, start_ns: int, end_ns: int) -> np.ndarray:
    ends = records["end"]
    return records[(ends >= start_ns) & (ends < end_ns)]


def _widest_percentile(count: int, ceiling: str = "p99") -> str:
    names = list(PERCENTILES)
    usable = [n for n in names[: names.index(ceiling) + 1] if count >= MIN_SAMPLES[n]]
    return usable[-1] if usable else "p50"


def cut_windows(records: np.ndarray, origin_ns: int, window_ns: int, until_ns: int, *, first: int = 0) -> list[Window]:
    """The complete windows between ``origin_ns`` and ``until_ns`` (by completion instant), from
    window number ``first`` on (the earlier ones, once complete, never change)."""
    windows: list[Window] = []
    index = first
    while origin_ns + (index + 1) * window_ns <= until_ns:
        start = origin_ns + index * window_ns
        windows.append(_window(index, _in_range(records, start, start + window_ns), start, start + window_ns))
        index += 1
    return windows


def _window(index: int, chunk: np.ndarray, start_ns: int, end_ns: int) -> Window:
    ok = chunk[chunk["kind"] == Kind.OK]
    name = _widest_percentile(len(ok))
    latency = None
    if len(ok):
        latency = round(float(np.percentile((ok["end"] - ok["intended"]) / 1e6, PERCENTILES[name])), 3)
    return Window(
        index=index,
        start_ns=start_ns,
        end_ns=end_ns,
        ok=len(ok),
        errors=len(chunk) - len(ok),
        throughput_rps=len(ok) / ((end_ns - start_ns) / 1e9),
        latency_ms=latency,
        percentile=name,
    )


def _agree(values: Sequence[float], tolerance: float) -> bool:
    mean = float(np.mean(values))
    if mean <= 0:
        return all(v == 0 for v in values)
    return all(abs(v - mean) <= tolerance * mean for v in values)


def settled(windows: Sequence[Window], count: int, tolerance: float, latency_tolerance: float) -> bool:
    """Whether the last ``count`` windows agree on throughput and on their latency percentile."""
    if len(windows) < count:
        return False
    last = windows[-count:]
    latencies = [w.latency_ms for w in last]
    if any(v is None for v in latencies) or len({w.percentile for w in last}) > 1:
        return False
    rates = [w.throughput_rps for w in last]
    return _agree(rates, tolerance) and _agree([float(v or 0) for v in latencies], latency_tolerance)


@dataclass(frozen=True)
class StepFigures:
    """A step's figures from its reported windows."""

    requests: int
    windows: int
    latency_ms: dict[str, float | None]
    latency_ms_p50_std: float | None
    throughput_rps: float
    throughput_rps_std: float | None
    throughput_rps_ci: tuple[float, float] | None
    errors: dict[str, int]
    error_rate: float
    send_lag_ms_p99: float | None
    late_share: float
    window_table: list[dict[str, float | int | str | None]] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)  # per-window figures, what the gate compares

    @property
    def generator_behind(self) -> bool:
        return self.late_share > LATE_SHARE_BEHIND


def summarize(records: np.ndarray, windows: Sequence[Window], *, pooled: np.ndarray | None = None) -> StepFigures:
    """Pool the requests that completed in ``windows`` (contiguous) into the step's figures.

    ``pooled`` gives the requests to pool instead (a ramp segment pools those *intended* in it).
    """
    if pooled is not None:
        chunk = pooled
    else:
        chunk = _in_range(records, windows[0].start_ns, windows[-1].end_ns) if windows else records[:0]
    ok = chunk[chunk["kind"] == Kind.OK]
    kinds, counts = np.unique(chunk["kind"][chunk["kind"] != Kind.OK], return_counts=True)
    rates = [w.throughput_rps for w in windows]
    samples = _window_samples(records, windows)
    p50s = samples.get("latency_ms_p50")
    return StepFigures(
        requests=len(chunk),
        windows=len(windows),
        latency_ms=_latency(ok),
        latency_ms_p50_std=round(float(np.std(p50s, ddof=1)), 4) if p50s and len(p50s) > 1 else None,
        throughput_rps=float(np.mean(rates)) if rates else 0.0,
        throughput_rps_std=float(np.std(rates, ddof=1)) if len(rates) > 1 else None,
        throughput_rps_ci=bootstrap_ci(rates) if len(rates) > 1 else None,
        errors={Kind(int(k)).label: int(c) for k, c in zip(kinds, counts, strict=True)},
        error_rate=round((len(chunk) - len(ok)) / len(chunk), 6) if len(chunk) else 0.0,
        send_lag_ms_p99=_send_lag_p99(chunk),
        late_share=_late_share(chunk),
        window_table=[w.as_dict() for w in windows],
        samples=samples,
    )


def intended_window(records: np.ndarray, index: int, start_ns: int, end_ns: int) -> tuple[Window, np.ndarray]:
    """The requests *intended* in ``[start_ns, end_ns)`` and their window (a ramp's segment)."""
    intended = records["intended"]
    chunk = records[(intended >= start_ns) & (intended < end_ns)]
    return _window(index, chunk, start_ns, end_ns), chunk


def _latency(ok: np.ndarray) -> dict[str, float | None]:
    if not len(ok):
        return dict.fromkeys((*PERCENTILES, "max", "mean"))
    return latency_summary_ms(ok["end"] - ok["intended"])


def _window_samples(records: np.ndarray, windows: Sequence[Window]) -> dict[str, list[float]]:
    """Per-window throughput and latency percentiles (ms), for a step of two windows or more (a ramp
    segment has one): the gate tests a served step on these, as it tests in-process trials. A
    percentile is left out when any window has too few requests for it."""
    if len(windows) < 2:
        return {}
    samples = {"throughput_rps": [round(w.throughput_rps, 3) for w in windows]}
    latencies = []
    for window in windows:
        chunk = _in_range(records, window.start_ns, window.end_ns)
        ok = chunk[chunk["kind"] == Kind.OK]
        latencies.append(ok["end"] - ok["intended"])
    for name in ("p50", "p90", "p99"):
        if all(len(values) >= MIN_SAMPLES[name] for values in latencies):
            percentile = PERCENTILES[name]
            samples[f"latency_ms_{name}"] = [round(float(np.percentile(v, percentile)) / 1e6, 4) for v in latencies]
    return samples


def _send_lag_p99(chunk: np.ndarray) -> float | None:
    lag = (chunk["start"] - chunk["intended"]) / 1e6
    return round(float(np.percentile(lag, 99)), 3) if len(lag) >= MIN_SAMPLES["p99"] else None


def _late_share(chunk: np.ndarray) -> float:
    """Share of requests sent late while a slot was free: the generator, not the server, was behind."""
    if not len(chunk):
        return 0.0
    free = (chunk["flags"] & FLAG_WAITED_FOR_SLOT) == 0
    late = (chunk["start"] - chunk["intended"]) > LATE_SEND_NS
    return round(float(np.mean(free & late)), 4)
