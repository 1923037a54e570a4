"""Precision: at batch 1 on the digits model, the workbench's p50 agrees with wrk's within 15%.

    .venv/bin/python benchmarks/load_precision_vs_wrk.py [--rounds 2] [--duration-s 5]

One serving_harness process serves the digits CNN (the recipe's torch source, one intra-op thread);
the workbench (Locust, one closed-loop user, per-request records) and ``wrk -c1`` (C, one connection)
take turns sending the same JSON infer request, ``rounds`` times each, in one run. The ratio of their
p50s is printed per round; the verdict is on the ratio of the medians of the rounds' p50s (turns
interleave, so a neighbour's load on a shared machine falls on both); exit status 1 outside the band.

With ``--pin`` (the default on Linux with 2+ cores) the server's threads run on the last core and the
generators (Locust, wrk, this process) on the others: on a small machine, a server and a client that
migrate across the same cores add scheduler wake-up delays that depend on the client's rhythm, and
the comparison would measure that instead of the generator.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _wrk import run_wrk

from serving_harness.config import RuntimeSettings, ServingConfig
from workbench.data import load_dataset
from workbench.measure.load.engine import Target, run_profile
from workbench.measure.load.payloads import dataset_batches, write_payloads
from workbench.measure.server import HarnessServer
from workbench.models import load_source_model
from workbench.recipe.profiles import load_profile
from workbench.recipe.spec import DataSpec, ModelSpec

BAND = 0.15
MODEL = "digits"


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def pin(server_pid: int) -> str:
    """The server's threads on the last usable core, this process (and what it starts) on the others."""
    cores = sorted(os.sched_getaffinity(0))
    server_core, client_cores = {cores[-1]}, set(cores[:-1])
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), server_core)
    os.sched_setaffinity(0, client_cores)
    return f"server on cpu {cores[-1]}, generators on cpu {','.join(map(str, sorted(client_cores)))}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration-s", type=int, default=3)
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=can_pin())
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spec = ModelSpec(source="example", name="digits")
    source = load_source_model(spec)
    dataset = load_dataset(DataSpec(), spec)
    settings = ServingConfig(runtime=RuntimeSettings(name="torch", intra_op_threads=1, inter_op_threads=1))
    windows = max(3, args.duration_s)
    profile = load_profile(
        {
            "kind": "concurrency", "users": [1], "batch_size": 1, "binary": False, "warmup_s": 1.0,
            "window_s": 1.0, "min_windows": windows, "max_windows": windows, "tolerance": 10, "latency_tolerance": 10,
        }
    )  # fmt: skip
    ours_ms: list[float] = []
    theirs_ms: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        payloads = write_payloads(dataset_batches(dataset, 1, count=1), workdir / "payloads", binary=False)
        body = payloads.bin.read_bytes()
        with HarnessServer(source.artifact.path, settings, name=MODEL, log_path=workdir / "server.log") as server:
            placement = pin(server.pid) if args.pin else "unpinned"
            target = Target(server.url, MODEL, server=server)
            url = f"{server.url}/v2/models/{MODEL}/infer"
            print(
                f"\np50 at batch 1, digits ({source.artifact.format}), one connection, {placement}, {time.strftime('%Y-%m-%d %H:%M')}"
            )
            print(f"{'round':>5}{'workbench p50 ms':>18}{'wrk p50 ms':>12}{'ratio':>8}{'wb req':>8}")
            for round_ in range(1, args.rounds + 1):
                result = run_profile(target, profile, payloads, workdir=workdir / f"r{round_}")
                (m,) = result.measurements
                wrk = run_wrk(
                    url, body, {"Content-Type": "application/json"}, connections=1, duration_s=args.duration_s
                )
                ours, theirs = m.latency_ms["p50"] or float("nan"), wrk.latency_ms["p50"]
                ours_ms.append(ours)
                theirs_ms.append(theirs)
                print(f"{round_:>5}{ours:>18.3f}{theirs:>12.3f}{ours / theirs:>8.3f}{m.iterations:>8}")
    ratio = statistics.median(ours_ms) / statistics.median(theirs_ms)
    ok = abs(ratio - 1) <= BAND
    print(
        f"median{statistics.median(ours_ms):>17.3f}{statistics.median(theirs_ms):>12.3f}{ratio:>8.3f}"
        f"          {'within' if ok else 'OUTSIDE'} {BAND:.0%}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
