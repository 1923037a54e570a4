"""What the gate's false-alarm and power benchmarks share: a small real ONNX model, a runtime wrapper
that adds a fixed share of work, and one gate decision measured in-process, interleaved or sequential.

- interleaved: the two sides alternate round by round (ABBA), each round a short ``measure_inprocess``
  on each; the gate pairs the rounds (what ``workbench gate --interleave`` does for served variants);
- sequential: all of the baseline's trials, then all of the candidate's (what gating a new run against
  a committed baseline amounts to, with the two runs back to back: the kindest case for it).

Both designs give each side the same measurement: ``rounds`` figures from ``trial_s`` seconds each (one
per round interleaved, a block of ``rounds`` trials sequential), so neither arm has more data than the other.
A decision is the gate's verdict over all its checks (regression when any check is, after the gate's
error control across checks), and each rate is printed with its Wilson 95% interval.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from serving_harness.config import RuntimeSettings
from serving_harness.runtimes import create_runtime
from serving_harness.runtimes.base import ModelMetadata, Runtime
from workbench.data.base import Dataset
from workbench.gate.interleave import interleave_rounds, paired_sources
from workbench.gate.rules import GateOptions, GateResult, gate, parse_rule
from workbench.gate.sources import Figure, Source
from workbench.measure.inprocess import InprocessResult, measure_inprocess
from workbench.recipe.spec import MeasureSpec
from workbench.stats import ErrorControl, wilson_interval

RULES = ("latency_ms.p50:+10%", "latency_ms.p99:+10%", "throughput_rps:-5%")
FEATURES = 64
CASE = "model · b1"


def mlp_model(path: Path, *, layers: int = 4, hidden: int = 256, seed: int = 0) -> Path:
    """x FP32 [batch, 64] -> ``layers`` x (MatMul, Relu) -> [batch, 10]: a small real model (~0.1 ms a call)."""
    rng = np.random.default_rng(seed)
    nodes, weights, current, width = [], [], "x", FEATURES
    for i in range(layers):
        weights.append(
            numpy_helper.from_array((rng.standard_normal((width, hidden)) / np.sqrt(width)).astype(np.float32), f"w{i}")
        )
        nodes += [
            helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]),
            helper.make_node("Relu", [f"m{i}"], [f"h{i}"]),
        ]
        current, width = f"h{i}", hidden
    weights.append(
        numpy_helper.from_array((rng.standard_normal((width, 10)) / np.sqrt(width)).astype(np.float32), "head")
    )
    nodes.append(helper.make_node("MatMul", [current, "head"], ["y"]))
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], initializer=weights,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def load(path: Path) -> Runtime:
    """A fresh onnxruntime session of ``path`` with one intra-op thread."""
    runtime = create_runtime("onnxruntime")
    runtime.load(path, RuntimeSettings(name="onnxruntime", intra_op_threads=1))
    return runtime


class SlowedRuntime:
    """Wraps a runtime and makes every call do ``extra`` more work: after the wrapped call, it keeps the
    CPU busy for ``extra`` times that call's own duration (0.15: each call costs exactly 15% more)."""

    name: ClassVar[str] = "slowed"

    def __init__(self, inner: Runtime, *, extra: float) -> None:
        self.inner = inner
        self.extra = extra

    def load(self, path: Path, settings: RuntimeSettings) -> ModelMetadata:
        return self.inner.load(path, settings)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter_ns()
        outputs = self.inner.infer(inputs)
        deadline = time.perf_counter_ns() + int(self.extra * (time.perf_counter_ns() - start))
        while time.perf_counter_ns() < deadline:  # busy: work takes the CPU, a sleep would give it back
            pass
        return outputs


def dataset(rows: int = 64) -> Dataset:
    return Dataset({"x": np.random.default_rng(1).standard_normal((rows, FEATURES)).astype(np.float32)})


def _figures(result: InprocessResult) -> dict[str, float | None]:
    """One round's figures from a short measurement: the median of its trials."""
    return {name: float(np.median(values)) for name, values in result.samples.items()} | {
        name: None for name in ("latency_ms_p99",) if name not in result.samples
    }


@dataclass(frozen=True)
class Design:
    """How one decision is measured."""

    mode: str  # "interleaved" or "sequential"
    rounds: int = 8  # trials per side: one per round interleaved, a block of them sequential
    trial_s: float = 0.1
    rules: tuple[str, ...] = RULES
    error_control: ErrorControl = "holm"

    def seconds_per_decision(self) -> float:
        """Measuring time alone (both sides), without warm-up and loading."""
        return 2 * self.rounds * self.trial_s


def decide_once(design: Design, baseline: Runtime, candidate: Runtime, data: Dataset) -> GateResult:
    """Measure both sides as ``design`` says and return the gate's result on its rules."""
    rules = [parse_rule(text) for text in design.rules]
    if design.mode == "interleaved":
        base, cand = _interleaved(design, baseline, candidate, data)
    else:
        base, cand = _sequential(design, baseline, data), _sequential(design, candidate, data)
    return gate(base, cand, rules, GateOptions(error_control=design.error_control))


def _interleaved(design: Design, baseline: Runtime, candidate: Runtime, data: Dataset) -> tuple[Source, Source]:
    runtimes = {"baseline": baseline, "candidate": candidate}
    # Each round measures trial_s per side (two half trials, the fewest MeasureSpec takes; the round's figure
    # is their median): the gate sees `rounds` figures per side, as many as from the sequential block.
    spec = MeasureSpec(
        batch_sizes=(1,), trials=2, trial_duration_s=design.trial_s / 2, warmup_iters=20, min_trial_iters=20
    )

    def measure(label: str, index: int) -> dict[str, dict[str, float | None]]:
        return {CASE: _figures(measure_inprocess(runtimes[label], data, 1, spec))}

    return paired_sources(interleave_rounds(measure, ["baseline", "candidate"], design.rounds), "baseline", "candidate")


def _sequential(design: Design, runtime: Runtime, data: Dataset) -> Source:
    spec = MeasureSpec(
        batch_sizes=(1,), trials=design.rounds, trial_duration_s=design.trial_s, warmup_iters=20, min_trial_iters=20
    )
    result = measure_inprocess(runtime, data, 1, spec)
    figures = {name: Figure() for name in ("latency_ms_p50", "latency_ms_p99")}  # a trial too short for a p99
    figures.update({k: Figure(values=tuple(v)) for k, v in result.samples.items()})
    return Source("sequential", {CASE: figures})


@dataclass(frozen=True)
class Tally:
    """What ``count`` decisions of one design came to."""

    design: Design
    verdicts: Counter[str]
    seconds: float
    error_control: str  # how the gate controlled the error across a decision's checks

    @property
    def decisions(self) -> int:
        return sum(self.verdicts.values())


def run_decisions(
    count: int, design: Design, pair: Callable[[], tuple[Runtime, Runtime]], data: Dataset, *, every: int = 25
) -> Tally:
    """``count`` gate decisions; a decision is a regression when any check is, else inconclusive when any
    check is, else pass. Prints each regression's checks and a progress line every ``every`` decisions."""
    verdicts: Counter[str] = Counter()
    started = time.perf_counter()
    baseline, candidate = pair()
    control = ""
    for index in range(count):
        result = decide_once(design, baseline, candidate, data)
        control = result.error_control()
        verdict = (
            "regression" if result.count("regression") else ("inconclusive" if result.count("inconclusive") else "pass")
        )
        verdicts[verdict] += 1
        if verdict == "regression":
            print(f"  {design.mode:11s} decision {index + 1}: regression; {_details(result)}", flush=True)
        if (index + 1) % every == 0 or index + 1 == count:
            print(f"  {design.mode:11s} {index + 1}/{count}: {_counts(verdicts)}", flush=True)
    return Tally(design, verdicts, time.perf_counter() - started, control)


def _details(result: GateResult) -> str:
    return "; ".join(
        f"{c.rule.text} {c.verdict} {c.comparison.describe_change() if c.comparison else ''}" for c in result.checks
    )


def _counts(verdicts: Counter[str]) -> str:
    return ", ".join(f"{name} {verdicts[name]}" for name in ("pass", "inconclusive", "regression"))


def rate_line(title: str, hits: int, total: int, *, target: str) -> str:
    """``A/A false alarms (interleaved): 3/200 = 1.5%, Wilson 95% [0.5%, 4.3%]; target ≤ 5%``."""
    low, high = wilson_interval(hits, total)
    rate = hits / total if total else 0.0
    return f"{title}: {hits}/{total} = {rate:.1%}, Wilson 95% [{low:.1%}, {high:.1%}]; target {target}"


def report(title: str, tally: Tally, *, rate_of: str, target: str) -> None:
    """One line per design: the rate of ``rate_of`` decisions with its interval, and how it was measured."""
    design = tally.design
    print(rate_line(f"{title} ({design.mode})", tally.verdicts[rate_of], tally.decisions, target=target), flush=True)
    print(
        f"  {_counts(tally.verdicts)}; {design.rounds} trials of {design.trial_s:g} s per side; rules "
        f"{', '.join(design.rules)}; error control: {tally.error_control}; {tally.seconds:.0f} s",
        flush=True,
    )


def estimate_line(designs: Sequence[Design], count: int) -> str:
    """How long the measurement alone will take (warm-up, loading and the gate come on top)."""
    seconds = count * sum(d.seconds_per_decision() for d in designs)
    return f"{count} decisions per arm, {len(designs)} arm(s): at least {seconds / 60:.1f} min of measuring"
