"""MiniLM (seq 128, batch 32) on this CPU: each pipeline's throughput as a ratio to torch eager fp32, one run.

The issue's target: the best CPU variant >= 2.5x torch-eager fp32 throughput at batch 32, cosine >= 0.98.
Two measurements of the same variants, in one process:

1. the workbench itself: ``recipes/minilm-cpu.yaml`` with the pipelines below (``run_recipe`` writes a
   report under ``--reports``); its batch-32 in-process figures and cosine fidelity, as the report has them;
2. an interleaved check of the artifacts that run built: every round times each variant in turn on the
   same batches (the order rotates), so load from other processes on this shared machine hits all of
   them alike; the ratio to torch eager is taken within each round and its median printed.

    .venv/bin/python benchmarks/minilm_speedup.py --rounds 5
    .venv/bin/python benchmarks/minilm_speedup.py --recipe recipes/minilm-cpu-sentences.yaml
    .venv/bin/python benchmarks/minilm_speedup.py --set 'search.serving.base.runtime.intra_op_threads=1'

Padding: ``minilm-cpu.yaml`` fills every row with 128 real tokens (``data.options.fill``), so the
``trim_padding`` pipelines have nothing to cut there and the figures are what seq 128 costs. With
``--recipe recipes/minilm-cpu-sentences.yaml`` the rows are short sentences padded to 128 (about 19
real tokens): trimming then does far less work than the others, a gain that depends on the data.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from workbench.artifact import resolve_recorded_path
from workbench.paths import cache_dir
from workbench.stats import round_order

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

INT8 = {"quantize.ort_dynamic": {"per_channel": True, "op_types": ["MatMul"]}}  # reduce_range: auto
FUSE = {"compile.ort_graph": {"transformer": {"model_type": "bert"}}}
FUSE_TRIM = {"compile.ort_graph": {"transformer": {"model_type": "bert"}, "trim_padding": "attention_mask"}}
PIPELINES: dict[str, list[Any]] = {
    "torch-eager": [],
    "ort-fp32": ["export.onnx"],
    "ort-int8": ["export.onnx", INT8],
    "ort-fused-fp32": ["export.onnx", FUSE],
    "ort-fused-int8": ["export.onnx", FUSE, INT8],
    "ort-trim-fused-fp32": ["export.onnx", FUSE_TRIM],
    "ort-trim-fused-int8": ["export.onnx", FUSE_TRIM, INT8],
}
BATCH = 32
CALLS_PER_ROUND = 3


def main() -> int:
    args = _arguments()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from workbench.recipe.loader import load_recipe
    from workbench.sweep.runner import run_recipe

    overrides = [f"search.pipelines={json.dumps(PIPELINES)}", "search.baseline=torch-eager", *args.set]
    recipe = load_recipe(Path(args.recipe), overrides)
    print(f"CPU: {_cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    print(f"recipe {args.recipe}: data options {recipe.data.options}")
    started = time.perf_counter()
    run = run_recipe(recipe, reports=args.reports, hook=_progress)
    print(f"workbench run {run.path} ({time.perf_counter() - started:.0f} s)\n")
    _print_report(run)
    _interleaved(run, recipe, args.rounds)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    return 0


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--recipe", default=str(ROOT / "recipes" / "minilm-cpu.yaml"), help="MiniLM recipe (default: minilm-cpu.yaml)"
    )
    parser.add_argument("--reports", default="reports", help="report store (default: reports)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (0: skip the check)")
    parser.add_argument("--set", action="append", default=[], help="recipe override, as for `workbench run`")
    return parser.parse_args()


def _progress(event: str, payload: dict[str, Any]) -> None:
    if event == "variant":
        print(f"  building and measuring {payload['id']} ...", flush=True)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def _print_report(run: Any) -> None:
    """The report's own batch-32 figures: cosine, items/s ± spread, ratio to torch eager."""
    import pandas as pd

    frame = pd.read_parquet(run.path / "results.parquet")
    rows = frame[(frame["batch_size"] == BATCH) | frame["batch_size"].isna()]
    base = rows.loc[rows["pipeline"] == "torch-eager", "throughput_items_per_s"].iloc[0]
    print(f"workbench report, in-process, batch {BATCH} (variants measured one after another):")
    print(f"  {'pipeline':22s} {'status':8s} {'cosine':>8s} {'items/s':>9s} {'± std':>7s} {'x eager':>8s}")
    for row in rows.to_dict("records"):
        items, spread = float(row["throughput_items_per_s"]), float(row["throughput_rps_std"]) * BATCH
        cosine = float(row["accuracy"]) if row["accuracy"] is not None else float("nan")
        line = (
            f"  {row['pipeline']:22s} {row['status']:8s} {cosine:8.5f} {items:9.1f} {spread:7.1f} {items / base:8.2f}"
        )
        print(line if row["status"] == "ok" else f"{line}  {row['reason']}")
    envelope = json.loads((run.path / "run.json").read_text())
    print(f"  selected: {envelope.get('summary', {}).get('best')}")


def _interleaved(run: Any, recipe: Any, rounds: int) -> None:
    """Each round times every variant on the same batches; ratios to torch eager are per round."""
    if rounds <= 0:
        return
    from serving_harness.runtimes import create_runtime
    from workbench.data import load_dataset

    records = [r for r in run.read_variants() if r.status == "ok" and r.artifact is not None]
    runtimes = {}
    for record in records:
        settings = record.serving
        runtime = create_runtime(settings.runtime.name)
        artifact = resolve_recorded_path(record.artifact.path, cache_dir())  # recorded relative to the cache
        runtime.load(artifact, settings.runtime)
        runtimes[record.pipeline] = runtime
    dataset = load_dataset(recipe.data, recipe.model)
    batches = [dataset.batch(i * BATCH, BATCH) for i in range(CALLS_PER_ROUND)]
    rates: dict[str, list[float]] = {name: [] for name in runtimes}
    names = list(runtimes)
    for round_index in range(rounds):
        for name in round_order(names, round_index):
            rates[name].append(_items_per_s(runtimes[name], batches))
    _print_ratios(rates, rounds)


def _items_per_s(runtime: Any, batches: list[dict[str, np.ndarray]]) -> float:
    runtime.infer(batches[0])  # warm: first-call allocations are not what is measured
    started = time.perf_counter()
    for batch in batches:
        runtime.infer(batch)
    return BATCH * len(batches) / (time.perf_counter() - started)


def _print_ratios(rates: dict[str, list[float]], rounds: int) -> None:
    eager = rates["torch-eager"]
    print(f"\ninterleaved check: {rounds} rounds x {CALLS_PER_ROUND} calls of batch {BATCH} per variant")
    print(f"  {'pipeline':22s} {'items/s (median)':>17s} {'x eager (median)':>17s} {'x eager per round':>30s}")
    for name, values in rates.items():
        ratios = [value / base for value, base in zip(values, eager, strict=True)]
        per_round = " ".join(f"{r:.2f}" for r in ratios)
        print(f"  {name:22s} {statistics.median(values):17.1f} {statistics.median(ratios):17.2f}   {per_round}")


if __name__ == "__main__":
    sys.exit(main())
