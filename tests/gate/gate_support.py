"""Small real models and report runs for the gate's tests (a module of its own: conftest is not importable)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from serving_harness.config import ServingConfig
from workbench.cli import main
from workbench.host import environment
from workbench.report.rundir import ReportStore
from workbench.report.schema import Measurement, Quality, RunEnvelope, VariantRecord
from workbench.report.table import records_to_frame

WIDTH = 64
CLASSES = 10
RECIPE = "tiny"
VARIANT = "ort-fp32"


def chain_model(path: Path, *, layers: int, hidden: int = WIDTH, seed: int = 0) -> Path:
    """x FP32 [batch, 64] -> ``layers`` x (MatMul to ``hidden``, Relu) -> logits [batch, 10].

    The cost grows with ``layers`` x ``hidden``²: two such files are a fast and a slow variant of one model.
    """
    rng = np.random.default_rng(seed)
    nodes, initializers, current, width = [], [], "x", WIDTH
    for i in range(layers):
        weight = (rng.standard_normal((width, hidden)) / np.sqrt(width)).astype(np.float32)
        initializers.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes += [
            helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]),
            helper.make_node("Relu", [f"m{i}"], [f"h{i}"]),
        ]
        current, width = f"h{i}", hidden
    head = (rng.standard_normal((width, CLASSES)) / np.sqrt(width)).astype(np.float32)
    initializers.append(numpy_helper.from_array(head, "head"))
    nodes.append(helper.make_node("MatMul", [current, "head"], ["logits"]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])
    graph = helper.make_graph(nodes, "chain", [x], [y], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def inputs(rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).standard_normal((rows, WIDTH)).astype(np.float32)}


def write_run(
    reports: Path,
    *,
    throughput_rps: list[float] | None = None,
    latency_ms_p99: list[float] | None = None,
    accuracy: float = 0.98,
    env: dict[str, Any] | None = None,
    status: str = "ok",
    samples: bool = True,
    results: bool = False,
) -> Path:
    """A complete run in the real report store whose per-trial figures are the ones given; with
    ``results``, also its results table (what ``workbench history`` reads)."""
    rates = throughput_rps or [1000.0, 1010.0, 990.0, 1005.0, 995.0]
    p99 = latency_ms_p99 or [2.0, 2.02, 1.98, 2.01, 1.99]
    run = ReportStore(reports).new_run(RECIPE)
    measurement = Measurement(
        mode="inprocess", case="b1", batch_size=1, iterations=5000, trials=len(rates),
        latency_ms={"p50": 1.0, "p99": float(np.median(p99))}, latency_ms_p50_std=0.01,
        throughput_rps=float(np.mean(rates)), throughput_rps_std=float(np.std(rates, ddof=1)),
        throughput_items_per_s=float(np.mean(rates)),
        samples={"throughput_rps": rates, "latency_ms_p99": p99} if samples else {},
    )  # fmt: skip
    quality = Quality(metric="accuracy", value=accuracy, baseline=0.98, drop=0.98 - accuracy, drop_rel=0.0)
    record = VariantRecord(
        variant=VARIANT, pipeline=VARIANT, is_baseline=True, steps=[], serving=ServingConfig(), serving_label="ort t1",
        runtime="onnxruntime", status=status, reason="export failed" if status == "failed" else None,
        quality=quality if status == "ok" else None, measurements=[measurement] if status == "ok" else [],
    )  # fmt: skip
    run.write_variant(record)
    if results:
        run.write_results(records_to_frame(run.run_id, [record]))
    now = datetime.now(UTC)
    envelope = RunEnvelope(
        run_id=run.run_id, recipe_name=RECIPE, spec_hash="0" * 16, created=now, finished=now, status="complete",
        workbench_version="test", environment=env if env is not None else environment(), recipe={},
    )  # fmt: skip
    run.write_envelope(envelope)
    return run.path


def workbench(*args: str | Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run ``workbench ARGS`` in this process through the real entry point; return its exit code."""
    monkeypatch.setattr(sys, "argv", ["workbench", *map(str, args)])
    try:
        main()
    except SystemExit as exited:
        return int(exited.code or 0)
    return 0
