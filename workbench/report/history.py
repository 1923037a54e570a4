"""Performance history: every run of a recipe as a point on a timeline, and the change points in it.

A *series* is one recipe × variant × case × metric on one machine: runs measured on different hardware
(CPU model, cores, GPUs) are never joined into one line, because a new machine is not a regression.
Points are ordered by the time their run was created; each keeps its git commit, its spread (the row's
interval or standard deviation) and its report, so a change point can name the commits it lies between.

Change points come from ``ruptures`` (PELT, least-squares cost) on the series scaled by its own noise:

* the noise is the MAD of first differences (a step moves one difference only, so a regression does not
  inflate its own yardstick), divided by sqrt(2) because a difference carries two points' noise;
* single outliers are clipped to 3 noise units around a 5-point running median (a step survives a
  running median; one slow run does not);
* the penalty is ``4.5 · ln(n)`` noise units squared per change point, and no segment is shorter
  than 4 points. Tuned on simulated series (tests/report/test_history.py): flat series with 3% noise
  (Gaussian and heavy-tailed) give a false change point in ≤ 5% of seeds, a 15% step is found, and a creep
  of five +3% steps is found in the worse direction in ≥ 90% of seeds.

Example::

    history = load_history(Path("reports"), "digits-cpu", metrics=["latency_ms_p50"])
    for series in history.series:
        for change in regressions_at_head(series):
            print(series.key, change.describe())
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ruptures as rpt
from scipy.ndimage import median_filter

from workbench.errors import WorkbenchError
from workbench.metrics import column_name, higher_is_better, is_untrusted
from workbench.report.rundir import BASELINE_DIR, RESULTS_FILE, RUN_FILE, ReportStore, RunDir
from workbench.report.schema import RunEnvelope

__all__ = [
    "DEFAULT_METRICS",
    "ChangePoint",
    "DetectionConfig",
    "History",
    "Point",
    "Series",
    "SeriesKey",
    "change_points",
    "find_change_points",
    "hardware_fingerprint",
    "hardware_label",
    "load_history",
    "noise_sigma",
    "regressions_at_head",
]

logger = logging.getLogger(__name__)

DEFAULT_METRICS = ("throughput_rps", "latency_ms_p50", "latency_ms_p99", "accuracy")
# MAD → standard deviation for Gaussian noise; a first difference has sqrt(2) times one point's noise.
_MAD_TO_SIGMA = 1.4826 / math.sqrt(2.0)


@dataclass(frozen=True, kw_only=True)
class DetectionConfig:
    """How change points are found. The defaults are the tuned ones (see the module docstring)."""

    penalty_per_log_n: float = 4.5
    min_segment: int = 4
    clip_sigmas: float = 3.0
    smoothing_window: int = 5
    # The noise floor, relative to the series' median: a series with no noise at all (accuracy on a fixed
    # test set) still has a scale, so a real move of a tenth of a percent registers and rounding does not.
    min_relative_noise: float = 1e-3


@dataclass(frozen=True)
class Point:
    """One run's figure: when, which commit, the value and its spread, and the run's report."""

    run_id: str
    created: datetime
    commit: str | None
    value: float
    low: float | None = None
    high: float | None = None
    report: Path | None = None
    baseline: bool = False

    @property
    def short_commit(self) -> str:
        return self.commit[:8] if self.commit else "?"


@dataclass(frozen=True, order=True)
class SeriesKey:
    """What a series measures, and where: ``hardware`` is a short fingerprint of the machine."""

    recipe: str
    variant: str
    case: str
    metric: str
    hardware: str


@dataclass(frozen=True)
class Series:
    """One line on a timeline: the points of one key, oldest first."""

    key: SeriesKey
    hardware_label: str
    points: tuple[Point, ...]

    @property
    def values(self) -> np.ndarray:
        return np.array([p.value for p in self.points], dtype=float)

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.key.metric)


@dataclass(frozen=True)
class ChangePoint:
    """A change at ``index`` (the first point of the new segment), between two segment medians."""

    index: int
    before_median: float
    after_median: float
    relative_change: float  # signed: (after - before) / |before|; ±inf when before is 0
    worse: bool
    commit_before: str | None = None  # the last commit before the change
    commit_after: str | None = None  # the first commit after it
    run_before: str | None = None
    run_after: str | None = None

    def describe(self) -> str:
        """``+15.0% worse (a1b2c3d4..e5f6a7b8)``."""
        direction = "worse" if self.worse else "better"
        return f"{_percent(self.relative_change)} {direction} ({self.commit_range})"

    @property
    def commit_range(self) -> str:
        return f"{_short(self.commit_before)}..{_short(self.commit_after)}"


@dataclass(frozen=True)
class History:
    """Every series found under a reports folder, and the runs that could not be read."""

    series: tuple[Series, ...]
    skipped: tuple[str, ...] = field(default_factory=tuple)

    def recipes(self) -> list[str]:
        return sorted({s.key.recipe for s in self.series})


# ------------------------------------------------------------------------------------------------- change points


def find_change_points(
    values: Sequence[float] | np.ndarray, *, higher_is_better: bool, config: DetectionConfig | None = None
) -> list[ChangePoint]:
    """The change points of one series of values (oldest first), with their magnitude and direction.

    Pure: no commits (see ``change_points``). A series too short for two segments has none.
    """
    config = config or DetectionConfig()
    data = np.asarray(values, dtype=float)
    if len(data) < 2 * config.min_segment or not np.all(np.isfinite(data)):
        return []
    scaled = _robust_scaled(data, config)
    penalty = config.penalty_per_log_n * math.log(len(data))
    ends = rpt.Pelt(model="l2", min_size=config.min_segment, jump=1).fit(scaled).predict(pen=penalty)
    return _describe_breaks(data, [int(end) for end in ends[:-1]], higher_is_better)


def noise_sigma(data: np.ndarray, min_relative_noise: float = 1e-3) -> float:
    """The series' noise: MAD of first differences (robust to steps and outliers), floored above zero, and at
    the recording's resolution where the series flickers at it (see ``flicker_quantum``)."""
    differences = np.diff(data)
    mad = float(np.median(np.abs(differences - np.median(differences)))) if len(differences) else 0.0
    floor = min_relative_noise * abs(float(np.median(data)))
    return max(mad * _MAD_TO_SIGMA, floor, flicker_quantum(data), 1e-12)


def flicker_quantum(data: np.ndarray) -> float:
    """The resolution a series was recorded at, when its noise is below it: values on a grid (every gap
    between distinct values a whole multiple of the smallest), and the series going up one way and back
    down at least once. Then most consecutive values are equal, the MAD of the differences is 0, and one
    value a step away would look like a change of many "sigmas": a p50 of 17 µs recorded in whole µs
    flickers between 0.017 and 0.018 ms. 0 for continuous values, or for a grid the series only ever
    stepped along one way (accuracy on a fixed test set dropping by one sample: a real change, no noise).
    """
    distinct = np.unique(data)
    if len(distinct) < 2 or len(distinct) > max(3, len(data) // 3):
        return 0.0
    gaps = np.diff(distinct)
    quantum = float(gaps.min())
    multiples = gaps / quantum
    if not np.allclose(multiples, np.round(multiples), atol=1e-3):
        return 0.0
    moves = np.sign(np.diff(data))
    moves = moves[moves != 0]
    return quantum if bool(np.any(moves[1:] != moves[:-1])) else 0.0


def _robust_scaled(data: np.ndarray, config: DetectionConfig) -> np.ndarray:
    """The series in noise units, each point clipped to ``clip_sigmas`` around its running median."""
    sigma = noise_sigma(data, config.min_relative_noise)
    trend = median_filter(data, size=config.smoothing_window, mode="nearest")
    limit = config.clip_sigmas * sigma
    return np.asarray((trend + np.clip(data - trend, -limit, limit)) / sigma, dtype=float)


def _describe_breaks(data: np.ndarray, breaks: list[int], higher_is_better: bool) -> list[ChangePoint]:
    edges = [0, *breaks, len(data)]
    medians = [float(np.median(data[start:end])) for start, end in itertools.pairwise(edges)]
    found = []
    for index, before, after in zip(breaks, medians, medians[1:], strict=False):
        change = _relative(before, after)
        worse = change < 0 if higher_is_better else change > 0
        found.append(ChangePoint(index, before, after, change, worse))
    return found


def _relative(before: float, after: float) -> float:
    if before == 0:
        return 0.0 if after == 0 else math.copysign(math.inf, after)
    return (after - before) / abs(before)


def change_points(series: Series, config: DetectionConfig | None = None) -> list[ChangePoint]:
    """The change points of ``series``, each with the commits and runs on either side of it."""
    found = find_change_points(series.values, higher_is_better=series.higher_is_better, config=config)
    return [_with_commits(change, series.points) for change in found]


def _with_commits(change: ChangePoint, points: Sequence[Point]) -> ChangePoint:
    before, after = points[change.index - 1], points[change.index]
    return replace(
        change,
        commit_before=before.commit,
        commit_after=after.commit,
        run_before=before.run_id,
        run_after=after.run_id,
    )


def regressions_at_head(
    series: Series, config: DetectionConfig | None = None, *, within_last: int | None = None
) -> list[ChangePoint]:
    """Worse-direction change points the newest point still sits behind (what ``gate --history`` fails on).

    A change counts while the newest segment is still worse than the segment before the change by at
    least half the change (a regression that was fixed, or mostly fixed, does not); ``within_last`` keeps
    only changes among the newest N points.
    """
    found = change_points(series, config)
    if not found:
        return []
    head = found[-1].after_median
    oldest = len(series.points) - within_last if within_last is not None else 0
    return [c for c in found if c.worse and c.index >= oldest and _persists(c, head)]


def _persists(change: ChangePoint, head_median: float) -> bool:
    """Whether the head still holds at least half of ``change`` (same sign, half the size or more)."""
    still = _relative(change.before_median, head_median)
    return still / change.relative_change >= 0.5 if math.isfinite(change.relative_change) else still != 0


# --------------------------------------------------------------------------------------------------- reading runs


def hardware_fingerprint(environment: Mapping[str, Any]) -> str:
    """A short, stable id of the machine a run measured on: CPU model, logical cores, GPU names."""
    return hashlib.sha256(hardware_label(environment).encode()).hexdigest()[:8]


def hardware_label(environment: Mapping[str, Any]) -> str:
    """``AMD EPYC · 2 cores · NVIDIA H100`` (what the fingerprint is made of, for people)."""
    found = environment.get("cpu")
    cpu: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    gpus = [str(g.get("name")) for g in environment.get("gpus") or () if isinstance(g, Mapping)]
    parts = [str(cpu.get("model") or "unknown cpu"), f"{cpu.get('cores_logical') or '?'} cores", *gpus]
    return " · ".join(parts)


def load_history(
    reports: Path,
    recipe: str | None = None,
    *,
    metrics: Iterable[str] = DEFAULT_METRICS,
    variants: Iterable[str] | None = None,
) -> History:
    """Every run (and promoted baseline) under ``reports``, as series per variant × case × metric × machine.

    Runs that cannot be read are skipped with a warning (listed in ``History.skipped``); failed
    variants and steps the load engine did not trust are not points.
    """
    columns = [column_name(m) for m in metrics]
    for metric in columns:
        higher_is_better(metric)  # an unknown metric is a usage error before anything is read
    wanted = set(variants) if variants is not None else None
    grouped: dict[SeriesKey, list[Point]] = defaultdict(list)
    labels: dict[str, str] = {}
    skipped: list[str] = []
    for run, baseline in _runs(reports, recipe):
        read = _read_or_skip(run, skipped)
        if read is None:
            continue
        envelope, frame = read
        labels[hardware_fingerprint(envelope.environment)] = hardware_label(envelope.environment)
        for key, point in _points(run, envelope, frame, columns, wanted, baseline):
            grouped[key].append(point)
    series = [_series(key, labels[key.hardware], points) for key, points in sorted(grouped.items())]
    return History(tuple(series), tuple(skipped))


def _read_or_skip(run: RunDir, skipped: list[str]) -> tuple[RunEnvelope, pd.DataFrame] | None:
    """The run's envelope and results; None (and a warning) when they cannot be read, None when not yet written."""
    try:
        envelope, frame = _read_run(run)
    except (WorkbenchError, OSError, ValueError) as exc:  # a broken run must not hide the others
        message = f"{run.path}: {type(exc).__name__}: {exc}"
        logger.warning("history skips %s", message)
        skipped.append(message)
        return None
    return (envelope, frame) if frame is not None else None


def _runs(reports: Path, recipe: str | None) -> Iterator[tuple[RunDir, bool]]:
    """Numbered runs first, then each recipe's promoted baseline (when it is not one of those runs)."""
    store = ReportStore(reports)
    runs = store.runs(recipe)
    yield from ((run, False) for run in runs)
    folders = [reports / recipe] if recipe else sorted(p for p in reports.glob("*") if p.is_dir())
    known = {(run.recipe_name, run.run_id) for run in runs}
    for folder in folders:
        baseline = RunDir(folder / BASELINE_DIR)
        if (baseline.path / RUN_FILE).exists() and not _same_run(baseline, folder.name, known):
            yield baseline, True


def _same_run(baseline: RunDir, recipe: str, known: set[tuple[str, str]]) -> bool:
    try:
        return (recipe, baseline.read_envelope().run_id) in known
    except (WorkbenchError, OSError, ValueError):  # unreadable: load_history reports it
        return False


def _read_run(run: RunDir) -> tuple[RunEnvelope, pd.DataFrame | None]:
    envelope = run.read_envelope()
    if not run.has_results:
        logger.info("history: %s has no %s yet (status %s)", run.path, RESULTS_FILE, envelope.status)
        return envelope, None
    return envelope, run.read_results()


def _points(
    run: RunDir,
    envelope: RunEnvelope,
    frame: pd.DataFrame,
    columns: Sequence[str],
    variants: set[str] | None,
    baseline: bool,
) -> Iterator[tuple[SeriesKey, Point]]:
    hardware = hardware_fingerprint(envelope.environment)
    commit = (envelope.environment.get("git") or {}).get("commit")
    report = next((path for path in (run.html_path, run.markdown_path) if path.exists()), None)
    created = envelope.created if envelope.created.tzinfo else envelope.created.replace(tzinfo=UTC)  # sortable
    for row in frame.to_dict("records"):
        if not _usable(row, variants):
            continue
        case = f"{row.get('mode')} {row.get('case')}"
        for metric in columns:
            value = row.get(metric)
            if value is None or not np.isfinite(float(value)):
                continue
            low, high = _spread(row, metric, float(value))
            key = SeriesKey(envelope.recipe_name, str(row["variant"]), case, metric, hardware)
            yield key, Point(envelope.run_id, created, commit, float(value), low, high, report, baseline)


def _usable(row: Mapping[Hashable, Any], variants: set[str] | None) -> bool:
    if row.get("status") != "ok" or is_untrusted(row.get("flags")):
        return False
    return variants is None or str(row.get("variant")) in variants


def _spread(row: Mapping[Hashable, Any], metric: str, value: float) -> tuple[float | None, float | None]:
    """The row's interval for ``metric`` when it has one, else ± its standard deviation, else none."""
    low, high = _finite(row.get(f"{metric}_ci_low")), _finite(row.get(f"{metric}_ci_high"))
    if low is not None and high is not None:
        return low, high
    std = _finite(row.get(f"{metric}_std"))
    return (value - std, value + std) if std is not None else (None, None)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _series(key: SeriesKey, label: str, points: list[Point]) -> Series:
    return Series(key, label, tuple(sorted(points, key=lambda p: (p.created, p.run_id))))


def _short(commit: str | None) -> str:
    return commit[:8] if commit else "?"


def _percent(change: float) -> str:
    return "new" if math.isinf(change) else f"{change:+.1%}"
