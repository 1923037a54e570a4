"""What the gate's false-alarm and power benchmarks share: a small real ONNX model, a runtime wrapper
that adds a fixed share of work, and one gate decision measured in-process, interleaved or sequential.

- interleaved: the two sides alternate round by round (ABBA), each round a short ``measure_inprocess``
  on each; the gate pairs the rounds (what ``workbench gate --interleave`` does for served variants);
- sequential: all of the baseline's trials, then all of the candidate's (what gating a new run against
  a committed baseline amounts to, with the two runs back to back: the kindest case for it).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
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
    rounds: int = 8  # interleaved: rounds; sequential: trials per side
    trial_s: float = 0.1


def decide_once(design: Design, baseline: Runtime, candidate: Runtime, data: Dataset) -> GateResult:
    """Measure both sides as ``design`` says and return the gate's result on RULES."""
    rules = [parse_rule(text) for text in RULES]
    if design.mode == "interleaved":
        base, cand = _interleaved(design, baseline, candidate, data)
    else:
        base, cand = _sequential(design, baseline, data), _sequential(design, candidate, data)
    return gate(base, cand, rules, GateOptions())


def _interleaved(design: Design, baseline: Runtime, candidate: Runtime, data: Dataset) -> tuple[Source, Source]:
    runtimes = {"baseline": baseline, "candidate": candidate}
    spec = MeasureSpec(batch_sizes=(1,), trials=2, trial_duration_s=design.trial_s, warmup_iters=20, min_trial_iters=20)

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


def run_decisions(
    count: int, design: Design, pair: Callable[[], tuple[Runtime, Runtime]], data: Dataset
) -> tuple[Counter[str], float]:
    """``count`` gate decisions; a decision is a regression when any rule is, else inconclusive when
    any rule is, else pass. Returns the verdict counts and the seconds taken."""
    verdicts: Counter[str] = Counter()
    started = time.perf_counter()
    baseline, candidate = pair()
    for index in range(count):
        result = decide_once(design, baseline, candidate, data)
        verdict = (
            "regression" if result.count("regression") else ("inconclusive" if result.count("inconclusive") else "pass")
        )
        verdicts[verdict] += 1
        detail = "; ".join(
            f"{c.rule.text} {c.verdict} {c.comparison.describe_change() if c.comparison else ''}" for c in result.checks
        )
        print(f"  {design.mode:11s} decision {index + 1:2d}: {verdict:12s} {detail}", flush=True)
    return verdicts, time.perf_counter() - started


def report(title: str, verdicts: Counter[str], seconds: float, *, rate_of: str, target: str) -> None:
    total = sum(verdicts.values())
    rate = verdicts[rate_of] / total if total else 0.0
    print(
        f"{title}: {verdicts[rate_of]}/{total} = {rate:.1%} {rate_of} "
        f"(pass {verdicts['pass']}, inconclusive {verdicts['inconclusive']}, regression {verdicts['regression']}); "
        f"target {target}; {seconds:.0f} s",
        flush=True,
    )
