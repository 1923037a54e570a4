"""Torch eager vs the torch build steps, interleaved in one process: throughput at batch 32 and cosine fidelity.

usage: python benchmarks/torch_variants_interleaved.py digits|minilm ROUNDS
"""

import os
import statistics
import sys
import time

import numpy as np

from serving_harness.config import RuntimeSettings
from serving_harness.runtimes.torch import TorchRuntime
from workbench.data import load_dataset
from workbench.data.metrics import cosine_similarity
from workbench.models import load_source_model
from workbench.paths import cache_dir
from workbench.recipe.spec import DataSpec, ModelSpec, StepSpec
from workbench.stats import round_order
from workbench.steps import StepContext
from workbench.sweep.cache import build

name, rounds = sys.argv[1], int(sys.argv[2])
threads = 1 if name == "digits" else 2
options = {} if name == "digits" else {"seq_len": 128}
spec = ModelSpec(source="example", name=name)
cache = cache_dir()
source = load_source_model(spec, cache)
data = load_dataset(DataSpec(limit=128, options=options), spec, cache)
context = StepContext(
    sample_inputs=data.batch(0, 2), dynamic_axes=source.dynamic_axes, output_names=tuple(s.name for s in source.outputs)
)
pipelines = {
    "eager": (),
    "torchscript": ("export.torchscript",),
    "torch_export": ("export.torch_export",),
    "int8": ("quantize.torch_dynamic",),
    "compiled": ("compile.torch",),
}
runtimes = {}
for label, steps in pipelines.items():
    artifact = build(source.artifact, tuple(StepSpec(name=s) for s in steps), context, cache)
    runtime = TorchRuntime()
    started = time.perf_counter()
    runtime.load(artifact.path, RuntimeSettings(name="torch", intra_op_threads=threads))
    print(f"{label}: load {time.perf_counter() - started:.1f}s, build figures {artifact.figures}", flush=True)
    runtimes[label] = runtime


def embed(rt):
    parts = [next(iter(rt.infer(b).values())) for b in data.batches(32)]
    return {"y": np.concatenate(parts)}


reference = embed(runtimes["eager"])
fidelity = {k: cosine_similarity(embed(rt), reference, None) for k, rt in runtimes.items()}
if name == "digits":
    agree = {k: float(np.mean(embed(rt)["y"].argmax(1) == reference["y"].argmax(1))) for k, rt in runtimes.items()}
batch = data.batch(0, 32)
for rt in runtimes.values():
    rt.infer(batch)
times = {k: [] for k in runtimes}
for round_index in range(rounds):
    for k in round_order(list(runtimes), round_index):
        rt = runtimes[k]
        t0 = time.perf_counter()
        rt.infer(batch)
        times[k].append(time.perf_counter() - t0)
base = statistics.median(times["eager"])
print(f"{name}: batch 32, {threads} thread(s), {rounds} interleaved rounds, load average {os.getloadavg()[0]:.1f}")
for k, ts in times.items():
    med = statistics.median(ts)
    q1, q3 = np.percentile(ts, [25, 75])
    extra = f" top1-agreement={agree[k]:.4f}" if name == "digits" else ""
    print(
        f"  {k:13s} median {med * 1e3:9.2f} ms (IQR {q1 * 1e3:.2f}-{q3 * 1e3:.2f})  {32 / med:9.1f} items/s  "
        f"ratio {base / med:5.2f}  cosine {fidelity[k]:.5f}{extra}"
    )
