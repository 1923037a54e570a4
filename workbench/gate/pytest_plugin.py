"""A pytest fixture that benchmarks a model variant in-process, writing results the CI gate reads.

Opt in (it is not registered by default: loading it imports the workbench, which costs a second)::

    pytest -p workbench.gate.pytest_plugin benchmarks/ --workbench-json out.json
    # or, in a conftest.py:  pytest_plugins = ["workbench.gate.pytest_plugin"]

    def test_fp32_model(workbench_benchmark):
        result = workbench_benchmark("model.onnx", {"x": batch})
        assert result.throughput_rps > 0

The measurement is the workbench's own (``measure.inprocess``: warm-up, then timed trials). The JSON
file is pytest-benchmark's format, so ``workbench gate --pytest-benchmark out.json --baseline
base.json --fail mean:5%`` reads it like pytest-benchmark's own: each trial is one round (``data``
holds its mean seconds per call, always saved), and ``extra_info.samples`` holds each trial's
``throughput_rps`` and latency percentiles in ms, so ``--fail latency_ms_p99:+10%`` works too.
``--workbench-trials`` and ``--workbench-trial-s`` shorten or lengthen every measurement.
"""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # the fixture's imports are paid only by sessions that use it
    import numpy as np

    from serving_harness.config import RuntimeSettings
    from serving_harness.runtimes.base import Runtime
    from workbench.measure.inprocess import InprocessResult

__all__ = ["VariantBenchmark", "workbench_benchmark"]

_RESULTS = pytest.StashKey[list[dict[str, Any]]]()
DEFAULT_TRIALS = 10
DEFAULT_TRIAL_S = 0.2


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("workbench", "workbench in-process benchmarks (workbench_benchmark fixture)")
    group.addoption("--workbench-json", metavar="PATH", help="Write the benchmarks as pytest-benchmark JSON.")
    group.addoption("--workbench-trials", type=int, default=DEFAULT_TRIALS, help="Timed trials per benchmark.")
    group.addoption("--workbench-trial-s", type=float, default=DEFAULT_TRIAL_S, help="Seconds per trial.")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RESULTS] = []


@dataclass
class VariantBenchmark:
    """Call it with a model file (or a loaded runtime) and a batch of inputs; it measures and records."""

    nodeid: str
    trials: int
    trial_duration_s: float
    results: list[dict[str, Any]]

    def __call__(
        self,
        model: Path | str | Runtime,
        inputs: Mapping[str, np.ndarray],
        *,
        name: str | None = None,
        settings: RuntimeSettings | None = None,
        warmup_iters: int = 10,
    ) -> InprocessResult:
        """Measure ``model`` on ``inputs`` (one batch, batch axis first); ``name`` tells apart several
        measurements in one test. A path is loaded with its default runtime, one intra-op thread."""
        from workbench.data.base import Dataset
        from workbench.measure.inprocess import measure_inprocess
        from workbench.recipe.spec import MeasureSpec

        runtime = _runtime(model, settings) if isinstance(model, str | Path) else model
        dataset = Dataset(dict(inputs))
        spec = MeasureSpec(
            batch_sizes=(len(dataset),),
            trials=self.trials,
            trial_duration_s=self.trial_duration_s,
            warmup_iters=warmup_iters,
            min_trial_iters=5,
        )
        result = measure_inprocess(runtime, dataset, len(dataset), spec)
        fullname = self.nodeid + (f"[{name}]" if name else "")
        self.results.append(_as_benchmark(fullname, name or self.nodeid.rsplit("::", 1)[-1], result, model))
        return result


def _runtime(path: Path | str, settings: RuntimeSettings | None) -> Runtime:
    from serving_harness.config import RuntimeSettings
    from serving_harness.model_dir import runtime_for
    from serving_harness.runtimes import create_runtime

    chosen = settings or RuntimeSettings.model_validate({"name": runtime_for(Path(path)), "intra_op_threads": 1})
    runtime = create_runtime(chosen.name)
    runtime.load(Path(path), chosen)
    return runtime


@pytest.fixture
def workbench_benchmark(request: pytest.FixtureRequest) -> VariantBenchmark:
    """Benchmark a model variant in-process; results go to ``--workbench-json`` (pytest-benchmark format)."""
    config = request.config
    return VariantBenchmark(
        nodeid=request.node.nodeid,
        trials=int(config.getoption("--workbench-trials")),
        trial_duration_s=float(config.getoption("--workbench-trial-s")),
        results=config.stash[_RESULTS],
    )


def _as_benchmark(fullname: str, name: str, result: InprocessResult, model: object) -> dict[str, Any]:
    """One benchmark entry in pytest-benchmark's shape: stats over rounds (= trials) in seconds per call."""
    per_call_s = [1.0 / rate for rate in result.samples["throughput_rps"]]
    ordered = sorted(per_call_s)
    q1, _, q3 = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else (ordered[0],) * 3
    stats = {
        "min": ordered[0],
        "max": ordered[-1],
        "mean": statistics.mean(ordered),
        "stddev": statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
        "rounds": len(ordered),
        "median": statistics.median(ordered),
        "iqr": q3 - q1,
        "q1": q1,
        "q3": q3,
        "ops": 1.0 / statistics.mean(ordered),
        "total": sum(ordered),
        "data": per_call_s,
        "iterations": 1,
    }
    extra = {"samples": result.samples, "batch_size": result.batch_size, "calls": result.iterations}
    if isinstance(model, str | Path):
        extra["model"] = str(model)
    return {"group": None, "name": name, "fullname": fullname, "params": None, "param": None,
            "extra_info": extra, "options": {"timer": "perf_counter_ns", "trials": result.trials}, "stats": stats}  # fmt: skip


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    terminalreporter.section("workbench benchmarks")
    for entry in results:
        samples = entry["extra_info"]["samples"]
        rates = samples["throughput_rps"]
        spread = statistics.stdev(rates) if len(rates) > 1 else 0.0
        p99 = samples.get("latency_ms_p99")
        tail = f", p99 {statistics.median(p99):.3f} ms" if p99 else ""
        terminalreporter.write_line(
            f"{entry['fullname']}: {statistics.mean(rates):.1f} ± {spread:.1f} calls/s over {len(rates)} trials{tail}"
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    path = config.getoption("--workbench-json")
    results = config.stash.get(_RESULTS, [])
    if not path or not results:
        return
    document = {
        "machine_info": _machine_info(),
        "commit_info": {},
        "benchmarks": results,
        "datetime": datetime.now(UTC).isoformat(),
        "version": "workbench.gate.pytest_plugin",
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def _machine_info() -> dict[str, Any]:
    """pytest-benchmark's machine_info keys the gate compares, plus the workbench's full fingerprint."""
    from workbench.host import environment

    fingerprint = environment()
    return {
        "node": platform.node(),
        "machine": platform.machine(),
        "system": platform.system(),
        "release": platform.release(),
        "python_implementation": platform.python_implementation(),
        "python_version": platform.python_version(),
        "cpu": {"brand_raw": fingerprint["cpu"]["model"], "count": fingerprint["cpu"]["cores_logical"]},
        "workbench_environment": fingerprint,
    }
