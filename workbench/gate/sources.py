"""What the CI gate compares, read from where it was measured: a report run (or a promoted baseline),
a pytest-benchmark JSON file (ours or pytest-benchmark's own), or an interleaved A/B measurement.

Each source becomes cases (a variant at a load step, or one benchmark) holding figures by metric
name (``throughput_rps``, ``latency_ms_p99``, ``accuracy``; pytest-benchmark's ``mean``, ``ops``, ...).
A figure carries one value per trial when there are any, else only a summary (mean, std, n), else one
exact value (a deterministic figure such as accuracy on a fixed evaluation set).

This is the one loader of measurements to compare: ``workbench gate`` and ``workbench compare`` both
read runs through ``run_source``. A served step of a run from before per-window figures were kept in
its record takes them from the run's load details (``load/<variant>.json``), the same windows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import NotFoundError, UsageError
from workbench.report.rundir import ReportStore, RunDir
from workbench.report.schema import Measurement, VariantRecord
from workbench.stats import Summary, block_statistics

__all__ = [
    "PYTEST_BENCHMARK_FIELDS",
    "Figure",
    "Source",
    "case_key",
    "find_run",
    "load_source",
    "measurement_figures",
    "pytest_benchmark_source",
    "run_source",
]

QUALITY_CASE = "quality"
MAX_BLOCKS = 20  # pytest-benchmark rounds are pooled into at most this many consecutive blocks
# pytest-benchmark's stats fields (seconds per call; ops is calls per second) and how a block computes them.
PYTEST_BENCHMARK_FIELDS: dict[str, Callable[[np.ndarray], float]] = {
    "min": lambda a: float(np.min(a)),
    "max": lambda a: float(np.max(a)),
    "mean": lambda a: float(np.mean(a)),
    "median": lambda a: float(np.median(a)),
    "stddev": lambda a: float(np.std(a, ddof=1)) if len(a) > 1 else 0.0,
    "iqr": lambda a: float(np.subtract(*np.percentile(a, [75, 25]))),
    "ops": lambda a: float(1 / np.mean(a)),
}
_LATENCY_KEYS = ("p50", "p90", "p95", "p99", "p999", "max", "mean")


@dataclass(frozen=True)
class Figure:
    """One metric of one case: per-trial ``values``, or only a ``summary``, or one ``exact`` value."""

    values: tuple[float, ...] = ()
    summary: Summary | None = None
    exact: float | None = None

    @property
    def empty(self) -> bool:
        return not self.values and self.summary is None and self.exact is None


@dataclass(frozen=True)
class Source:
    """Cases (case key → metric → figure) measured in one place, and where they were measured."""

    label: str
    cases: dict[str, dict[str, Figure]]
    environment: dict[str, Any] | None = None
    kind: str = "run"  # "run", "pytest-benchmark" or "interleaved"
    failed: dict[str, str] = field(default_factory=dict)  # variant → why it failed (runs only)
    modes: dict[str, str] = field(default_factory=dict)  # case key → "inprocess", "served" or "quality" (runs only)


def load_source(ref: str | Path, *, reports: Path) -> Source:
    """A run (folder, ``recipe/run-id``, run id, ``latest``) or a pytest-benchmark JSON file."""
    path = Path(ref)
    if path.is_file() and path.suffix == ".json":
        return pytest_benchmark_source(path)
    return run_source(find_run(ref, reports=reports))


def find_run(ref: str | Path | RunDir, *, reports: str | Path) -> RunDir:
    """A run by reference (folder, ``recipe/run-id``, run id, ``latest``), or the RunDir given."""
    if isinstance(ref, RunDir):
        return ref
    path = Path(ref)
    if path.is_dir() and not RunDir(path).run_file.exists():
        raise NotFoundError(
            f"{path} is not a run: it has no {RunDir(path).run_file.name} (promote one with `workbench baseline promote`)"
        )
    return ReportStore(reports).find(str(ref))


# ------------------------------------------------------------------------------------------------ report runs


def run_source(run: Path | RunDir) -> Source:
    """Every ok or rejected variant of a run: a case per measurement, and one for its quality."""
    run = run if isinstance(run, RunDir) else RunDir(run)
    envelope = run.read_envelope()
    records = run.read_variants()
    details = run.read_load_details(r.variant for r in records)
    cases: dict[str, dict[str, Figure]] = {}
    failed: dict[str, str] = {}
    modes: dict[str, str] = {}
    for record in records:
        if record.status == "failed":
            failed[record.variant] = record.reason or "failed"
            continue
        for key, mode, figures in _record_cases(record, details.get(record.variant, {})):
            cases[key], modes[key] = figures, mode
    label = str(run.path)
    return Source(label=label, cases=cases, environment=envelope.environment, failed=failed, modes=modes)


def _record_cases(record: VariantRecord, details: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Figure]]]:
    if record.quality is not None:
        quality = record.quality
        yield (
            case_key(record.variant, QUALITY_CASE),
            QUALITY_CASE,
            {
                "accuracy": Figure(exact=quality.value),
                "accuracy_drop": Figure(exact=quality.drop),
                "accuracy_drop_rel": Figure(exact=quality.drop_rel),
            },
        )
    windows = _window_samples(details)
    for m in record.measurements:
        samples = m.samples or (windows.get(m.case, {}) if m.mode == "served" else {})
        yield case_key(record.variant, m.case), m.mode, measurement_figures(m, samples)


def _window_samples(details: Mapping[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Per-window throughput and latency of each served load step in ``load/<variant>.json``, by case
    (the details file names each load step by its label, which is the measurement's case)."""
    found: dict[str, dict[str, list[float]]] = {}
    for step in details.get("steps") or []:
        figures: dict[str, list[float]] = {}
        for window in step.get("windows") or []:
            for name, value in window.items():
                if (name == "throughput_rps" or name.startswith("latency_ms_")) and value is not None:
                    figures.setdefault(name, []).append(float(value))
        if figures:
            found[str(step.get("step"))] = figures
    return found


def case_key(variant: str, case: str) -> str:
    """How a case is named in the gate's output: ``ort-fp32 · b1``."""
    return f"{variant} · {case}"


def measurement_figures(m: Measurement, samples: Mapping[str, list[float]]) -> dict[str, Figure]:
    """A measurement's figures as the gate compares them: per-trial (or per-window) values where the run
    stored them; otherwise what the summary columns still allow; every latency named, empty if not carried."""
    # Every latency figure is named, empty when this step could not carry it: a rule on it is then
    # inconclusive for this case rather than unknown.
    figures: dict[str, Figure] = {f"latency_ms_{k}": Figure() for k in _LATENCY_KEYS}
    figures["throughput_rps"] = _summary_figure(m.throughput_rps, m.throughput_rps_std, m.trials)
    p50 = m.latency_ms.get("p50")
    if p50 is not None:
        figures["latency_ms_p50"] = _summary_figure(p50, m.latency_ms_p50_std, m.trials)
    figures.update({name: Figure(values=tuple(values)) for name, values in samples.items()})
    if "throughput_rps" in samples:
        items = tuple(v * m.batch_size for v in samples["throughput_rps"])
        figures["throughput_items_per_s"] = Figure(values=items)
    return figures


def _summary_figure(mean: float, std: float | None, n: int) -> Figure:
    return Figure() if std is None else Figure(summary=Summary(mean=mean, std=std, n=n))


# ------------------------------------------------------------------------------------------ pytest-benchmark


def pytest_benchmark_source(path: Path, *, max_blocks: int = MAX_BLOCKS) -> Source:
    """A pytest-benchmark JSON file (``--benchmark-json``), or the one ``workbench.gate.pytest_plugin`` writes.

    With per-round data (``--benchmark-save-data``; the workbench fixture always saves it) each
    field is taken per block of consecutive rounds; without it only ``mean`` can be compared (from
    mean, stddev and rounds). Per-trial figures under ``extra_info.samples`` are cases' figures too.
    """
    document = _read_json(path)
    benchmarks = document.get("benchmarks")
    if not isinstance(benchmarks, list):
        raise UsageError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    cases = {str(b.get("fullname") or b.get("name")): _benchmark_figures(b, max_blocks) for b in benchmarks}
    environment = {"machine_info": document.get("machine_info"), "commit_info": document.get("commit_info")}
    return Source(label=str(path), cases=cases, environment=environment, kind="pytest-benchmark")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it as a pytest-benchmark JSON file ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise UsageError(f"{path}: expected a JSON object")
    return document


def _benchmark_figures(benchmark: Mapping[str, Any], max_blocks: int) -> dict[str, Figure]:
    stats = benchmark.get("stats") or {}
    data = stats.get("data")
    figures: dict[str, Figure] = {}
    for name, statistic in PYTEST_BENCHMARK_FIELDS.items():
        if data:
            figures[name] = Figure(values=tuple(block_statistics(data, blocks=max_blocks, statistic=statistic)))
        elif name == "mean" and "stddev" in stats:
            figures[name] = Figure(summary=Summary(mean=stats["mean"], std=stats["stddev"], n=int(stats["rounds"])))
        else:
            figures[name] = Figure()
    samples = (benchmark.get("extra_info") or {}).get("samples") or {}
    figures.update({str(k): Figure(values=tuple(float(x) for x in v)) for k, v in samples.items()})
    return figures
