"""serving_harness vs a bare Starlette route, REST vs gRPC, and --workers 2 vs 1: every issue 17 ratio, one run.

The bare route is the ceiling for a Python server: Starlette on uvloop + httptools, no access log,
orjson, the same ONNX model in the same ONNX Runtime settings (1 intra-op thread) run inline in the
handler, on the same OIP JSON body, answering an OIP JSON response, with no validation, metrics,
batcher or limits. The model is a small CNN on 8x8 inputs (issue 17's). What one run measures:

- the table: the bare route, the harness with batching off (max batch 1: each request handed to the model's
  thread), the same with ``--inline`` (computed on the event loop, as the bare route does), and the
  harness with max batch 16 and a 500 µs delay, each at 1 and 32 connections (``wrk -t1 --latency``);
- REST vs gRPC: the harness (batching off) serving both protocols, driven at 32 users by the
  workbench's own Locust engine (``workbench/measure/load``: ``GrpcClosedLoopUser`` and its REST twin).
  wrk speaks no gRPC, and comparing wrk's REST figure with a Python generator's gRPC figure would
  compare generators: one generator, the same users and tensors, for both sides of this ratio (a
  grpc.aio client in its own process, tried on 2 cores, reached the same gRPC rate: the server is the limit);
- ``--workers 2`` vs ``--workers 1``: the harness (batching off) at 32 connections. Where at least 4
  cores are here the servers get 2 and the load generator the rest (the target's setting); on fewer,
  server and generator share the cores, and the ratio is printed as measured on that many.

Each server is a subprocess on a free loopback port; one-worker servers are pinned to CPU 0 and the
load generator to the other CPUs (``--no-pin`` turns that off). Contenders are measured in rounds
whose order rotates, so drift on a shared machine hits each alike. Without wrk (``--load locust``, or
``auto`` where wrk is missing, as on the GPU machine) Locust drives the table too. A generator that
was saturated is flagged: that figure is the generator's ceiling, not the server's.

    apt-get install -y wrk
    .venv/bin/python benchmarks/serving_vs_starlette.py --seconds 5 --rounds 2
    .venv/bin/python benchmarks/serving_vs_starlette.py --seconds 1 --warmup-s 1 --rounds 1   # smoke, < 60 s
    .venv/bin/python benchmarks/serving_vs_starlette.py --only workers --seconds 5             # one group

Prints issue 17's table (req/s and p99 per server and concurrency, medians over rounds), the REST/gRPC
and workers figures, every ratio with its target and met or MISSED (with the per-round range), and
for each harness figure the server's own account of the time (queue, compute, total, batch size from
its /metrics) against the client's mean latency: where the time goes when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _locust import run_locust
from _processes import free_port, pin_to, server
from _wrk import run_wrk, wrk_path

from workbench.stats import round_order

CHANNELS, SIDE, CLASSES = 8, 8, 10
MODEL = "cnn"
BARE, OFF, ON = "bare Starlette route", "harness, batching off", "harness, max batch 16, 500 us"
INLINE = "harness, batching off, --inline"  # computed on the event loop, as the bare route does
PROTOCOLS = "harness, batching off, REST and gRPC (Locust)"
W1, W2 = "harness --workers 1", "harness --workers 2"
GROUPS = {"table": (BARE, OFF, INLINE, ON), "grpc": (PROTOCOLS,), "workers": (W1, W2)}
TABLE_CASES = ("c1", "c32")
WORKERS_MIN_CORES = 4  # 2 for the server, the rest for the load generator


@dataclass(frozen=True)
class Goal:
    """``figure`` over ``base`` (same run): req/s at least ``ratio``x (index 0), or p99 at most (index 1)."""

    what: str
    figure: tuple[str, str]
    base: tuple[str, str]
    index: int
    ratio: float


GOALS = (
    Goal("batching off, c32: throughput vs the bare route", (OFF, "c32"), (BARE, "c32"), 0, 1.2),
    Goal("batching off, c32: p99 vs the bare route's", (OFF, "c32"), (BARE, "c32"), 1, 1.0),
    Goal("batching off, c1: throughput vs the bare route", (OFF, "c1"), (BARE, "c1"), 0, 0.95),
    Goal("batching off --inline, c32: throughput vs the bare route", (INLINE, "c32"), (BARE, "c32"), 0, 1.2),
    Goal("batching off --inline, c32: p99 vs the bare route's", (INLINE, "c32"), (BARE, "c32"), 1, 1.0),
    Goal("batching off --inline, c1: throughput vs the bare route", (INLINE, "c1"), (BARE, "c1"), 0, 0.95),
    Goal("batching on, c32: throughput vs the bare route", (ON, "c32"), (BARE, "c32"), 0, 1.4),
    Goal("batching on, c32: p99 vs the bare route's", (ON, "c32"), (BARE, "c32"), 1, 1.0),
    Goal("gRPC vs REST, c32: throughput", (PROTOCOLS, "grpc c32"), (PROTOCOLS, "rest c32"), 0, 1.0),
    Goal("--workers 2 vs --workers 1, c32: throughput", (W2, "c32"), (W1, "c32"), 0, 1.8),
)


# ----------------------------------------------------------------------------------------- the model


def build_model(path: Path) -> Path:
    """A small CNN: x FP32 [-1, 1, 8, 8] -> conv 3x3 (8 channels) -> relu -> flatten -> dense -> logits [-1, 10]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "conv_w": rng.standard_normal((CHANNELS, 1, 3, 3)).astype(np.float32) * 0.3,
        "conv_b": np.zeros(CHANNELS, dtype=np.float32),
        "dense_w": rng.standard_normal((CHANNELS * SIDE * SIDE, CLASSES)).astype(np.float32) * 0.05,
        "dense_b": np.zeros(CLASSES, dtype=np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "dense_w"], ["l0"]),
        helper.make_node("Add", ["l0", "dense_b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, SIDE, SIDE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def request_array() -> np.ndarray:
    """The one input every request carries: a batch of one 8x8 image."""
    return np.random.default_rng(1).random((1, 1, SIDE, SIDE), dtype=np.float32)


def request_body() -> bytes:
    x = request_array()
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    return json.dumps(doc).encode()


# ------------------------------------------------------------------------------------ the bare server


def bare_app(model_path: str | Path) -> Any:
    """The bare Starlette OIP route: ONNX Runtime inline in the handler, orjson, nothing else."""
    import onnxruntime as ort
    import orjson
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])

    async def infer(request: Request) -> Response:
        doc = orjson.loads(await request.body())
        tensor = doc["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        (logits,) = session.run(None, {"x": x})
        out = {"name": "logits", "datatype": "FP32", "shape": list(logits.shape), "data": logits.ravel()}
        answer = {"model_name": "cnn", "model_version": "1", "outputs": [out]}
        return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    async def ready(request: Request) -> Response:
        return Response(b'{"ready":true}', media_type="application/json")

    return Starlette(
        routes=[Route(f"/v2/models/{MODEL}/infer", infer, methods=["POST"]), Route("/v2/health/ready", ready)]
    )


def run_bare_server(model_path: str, port: int) -> None:
    """The bare route served by uvicorn on uvloop + httptools (runs in its own process)."""
    import uvicorn

    uvicorn.run(
        bare_app(model_path), host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False,
        log_level="warning",
    )  # fmt: skip


# ----------------------------------------------------------------------------------------- the contenders


@dataclass(frozen=True)
class Contender:
    """A server to measure: its command line (``port``, ``grpc_port``), where it and its load run, its cases."""

    command: Callable[[int, int], list[str]]
    server_cpus: set[int] | None
    load_cpus: set[int] | None
    cases: tuple[str, ...]  # "c32": 32 connections over REST; "grpc c32": 32 users over gRPC


@dataclass(frozen=True)
class Layout:
    """Which CPUs the servers and the load generator get."""

    cores: int
    server_cpus: set[int] | None  # one-worker servers
    load_cpus: set[int] | None
    workers_server_cpus: set[int] | None  # the --workers runs: None when they share every core with the load
    workers_load_cpus: set[int] | None


def layout(pin: bool) -> Layout:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    every = set(cpus)
    one = {cpus[0]} if pin and len(cpus) > 1 else None
    two = set(cpus[:2]) if pin and len(cpus) >= WORKERS_MIN_CORES else None
    return Layout(len(cpus), one, every - one if one else None, two, every - two if two else None)


def contenders(model: Path, cpus: Layout) -> dict[str, Contender]:
    harness = [sys.executable, "-m", "serving_harness", "serve", "--model", str(model), "--name", MODEL]
    harness += ["--threads", "1", "--instances", "1", "--log-level", "warning"]
    off, on = ["--max-batch-size", "1"], ["--max-batch-size", "16", "--max-queue-delay-us", "500"]

    def run(*flags: str) -> Callable[[int, int], list[str]]:
        return lambda port, grpc_port: [*harness, *flags, "--port", str(port), "--grpc-port", str(grpc_port)]

    def bare(port: int, grpc_port: int) -> list[str]:
        return [sys.executable, __file__, "--bare-server", str(model), str(port)]

    one, two = (cpus.server_cpus, cpus.load_cpus), (cpus.workers_server_cpus, cpus.workers_load_cpus)
    return {
        BARE: Contender(bare, *one, TABLE_CASES),
        OFF: Contender(run(*off), *one, TABLE_CASES),
        INLINE: Contender(run(*off, "--inline"), *one, TABLE_CASES),
        ON: Contender(run(*on), *one, TABLE_CASES),
        PROTOCOLS: Contender(run(*off), *one, ("rest c32", "grpc c32")),
        W1: Contender(run(*off, "--workers", "1"), *two, ("c32",)),
        W2: Contender(run(*off, "--workers", "2"), *two, ("c32",)),
    }


def check_answer(url: str, body: bytes) -> list[float]:
    import httpx

    response = httpx.post(f"{url}/v2/models/{MODEL}/infer", content=body, headers={"Content-Type": "application/json"})
    response.raise_for_status()
    return [round(v, 5) for v in response.json()["outputs"][0]["data"]]


# ---------------------------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Sample:
    """One round's figures for one (contender, case)."""

    requests_per_s: float
    p99_ms: float
    server: dict[str, float]  # the harness's own breakdown from /metrics (empty for the bare route)
    saturated: bool = False  # the Locust generator was at its CPU limit


Figures = dict[tuple[str, str], list[Sample]]


def measure(name: str, contender: Contender, figures: Figures, args: argparse.Namespace, workdir: Path) -> None:
    """Start ``contender``'s server, check its answer, and drive each of its cases once."""
    pin_to(contender.load_cpus or set(range(os.cpu_count() or 1)))  # wrk and Locust inherit it
    port, grpc_port = free_port(), free_port()
    with server(contender.command(port, grpc_port), port, contender.server_cpus) as url:
        answer = check_answer(url, request_body())
        for case in contender.cases:
            sample = drive(url, case, f"127.0.0.1:{grpc_port}", args, workdir / f"{len(figures[(name, case)])}")
            figures[(name, case)].append(sample)
            print(f"{name:<46} {case:<9} {sample.requests_per_s:8.0f} req/s  p99 {sample.p99_ms:7.2f} ms  "
                  f"{_where(sample, case)}  (logits {answer[:2]})", flush=True)  # fmt: skip


def drive(url: str, case: str, grpc_target: str, args: argparse.Namespace, workdir: Path) -> Sample:
    """One measured load step of ``case`` ("c32", "rest c32", "grpc c32") against ``url``."""
    protocol, _, connections = case.rpartition(" ")
    users = int(connections.removeprefix("c"))
    if protocol or args.load == "locust":
        result = run_locust(
            url, MODEL, {"x": request_array()}, users=users, duration_s=args.duration_s, warmup_s=args.warmup_s,
            workdir=workdir / case.replace(" ", "-"), workers=args.locust_workers,
            grpc_target=grpc_target if protocol == "grpc" else None,
        )  # fmt: skip
        return Sample(result.requests_per_s, result.p99_ms, result.server, result.saturated)
    return _drive_wrk(url, users, args)


def _drive_wrk(url: str, connections: int, args: argparse.Namespace) -> Sample:
    from workbench.measure.server_metrics import breakdown, scrape

    route, body, headers = f"{url}/v2/models/{MODEL}/infer", request_body(), {"Content-Type": "application/json"}
    run_wrk(route, body, headers, connections=connections, duration_s=args.warmup_s)
    before = scrape(url, MODEL)
    result = run_wrk(route, body, headers, connections=connections, duration_s=args.duration_s)
    server_ms = {k: v for k, v in breakdown(before, scrape(url, MODEL)).items() if isinstance(v, float)}
    if result.errors:
        raise RuntimeError(f"{url}: {result.errors} non-2xx answers at c{connections}")
    return Sample(result.requests_per_s, result.latency_ms["p99"], server_ms)


def _where(sample: Sample, case: str) -> str:
    """Where a request's time goes: the client's mean (closed loop: users / req/s) vs the server's account."""
    users = int(case.rpartition(" ")[2].removeprefix("c"))
    client_ms = users / sample.requests_per_s * 1000 if sample.requests_per_s else float("nan")
    s = sample.server
    text = f"client mean {client_ms:6.2f} ms"
    if "server_latency_ms_mean" in s:
        text += (f" = server {s['server_latency_ms_mean']:.2f} (queue {s.get('queue_ms_mean', 0):.2f}, compute "
                 f"{s.get('compute_ms_mean', 0):.2f}, batch {s.get('batch_size_mean', 1):.1f}) + HTTP/loop/client "
                 f"{client_ms - s['server_latency_ms_mean']:.2f}")  # fmt: skip
    return text + ("  [generator saturated: a floor]" if sample.saturated else "")


# ---------------------------------------------------------------------------------------------- reporting


def _median(figures: Figures, key: tuple[str, str], index: int) -> float:
    return statistics.median((s.requests_per_s, s.p99_ms)[index] for s in figures[key])


def _ratio(figures: Figures, goal: Goal) -> float:
    return _median(figures, goal.figure, goal.index) / _median(figures, goal.base, goal.index)


def _round_ratios(figures: Figures, goal: Goal) -> list[float]:
    pairs = zip(figures[goal.figure], figures[goal.base], strict=True)
    return [(a.requests_per_s, a.p99_ms)[goal.index] / (b.requests_per_s, b.p99_ms)[goal.index] for a, b in pairs]


def report(figures: Figures, cpus: Layout, args: argparse.Namespace) -> None:
    print(f"\n{args.rounds} round(s) of {args.duration_s} s, load by {args.load}, {cpus.cores} cores; medians")
    if all((name, case) in figures for name in GROUPS["table"] for case in TABLE_CASES):
        _table(figures)
    others = [key for key in figures if key[0] not in GROUPS["table"]]
    for name, case in others:
        print(
            f"{name} {case}: {_median(figures, (name, case), 0):,.0f} req/s, p99 {_median(figures, (name, case), 1):.2f} ms"
        )
    print()
    for goal in GOALS:
        if goal.figure in figures and goal.base in figures:
            print(_goal_line(figures, goal, cpus))
    raw = {f"{n} {c}": [[round(s.requests_per_s), round(s.p99_ms, 3)] for s in v] for (n, c), v in figures.items()}
    print(json.dumps({"per_round_rps_p99_ms": raw}))


def _table(figures: Figures) -> None:
    print("| server | c1 req/s | c1 p99 ms | c32 req/s | c32 p99 ms |")
    print("|---|---|---|---|---|")
    for name in GROUPS["table"]:
        cells = []
        for case in TABLE_CASES:
            rps, p99_ms = _median(figures, (name, case), 0), _median(figures, (name, case), 1)
            rps_x, p99_x = (f" ({_median(figures, (name, case), i) / _median(figures, (BARE, case), i):.2f}x)"
                            if name != BARE else "" for i in (0, 1))  # fmt: skip
            cells += [f"{rps:,.0f}{rps_x}", f"{p99_ms:.2f}{p99_x}"]
        print(f"| {name} | " + " | ".join(cells) + " |")


def _goal_line(figures: Figures, goal: Goal, cpus: Layout) -> str:
    ratio, per_round = _ratio(figures, goal), _round_ratios(figures, goal)
    met = ratio >= goal.ratio if goal.index == 0 else ratio <= goal.ratio
    bound = ">=" if goal.index == 0 else "<="
    line = (f"{goal.what}: {ratio:.2f}x (rounds {min(per_round):.2f}-{max(per_round):.2f}; "
            f"target {bound} {goal.ratio}x): {'met' if met else 'MISSED'}")  # fmt: skip
    if goal.figure[0] == W2 and cpus.workers_server_cpus is None:
        line += f" [measured on {cpus.cores} cores, the load generator sharing them with the server]"
    if any(s.saturated for key in (goal.figure, goal.base) for s in figures[key]):
        line += " [a Locust generator was saturated: not trusted]"
    if not met:
        line += "\n    where the time goes: " + _where(figures[goal.figure][-1], goal.figure[1])
        line += "\n    against:             " + _where(figures[goal.base][-1], goal.base[1])
    return line


# ---------------------------------------------------------------------------------------------------- main


def main() -> None:
    args = _parser().parse_args()
    if args.bare_server:
        run_bare_server(args.bare_server[0], int(args.bare_server[1]))
        return
    args.load = _load_tool(args.load)
    cpus = layout(args.pin)
    if args.locust_workers is None:
        args.locust_workers = 0 if cpus.cores <= WORKERS_MIN_CORES else 2
    names = [name for group in args.only for name in GROUPS[group]]
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        plan = contenders(build_model(workdir / "cnn.onnx"), cpus)
        figures: Figures = {(name, case): [] for name in names for case in plan[name].cases}
        for round_index in range(args.rounds):
            print(f"round {round_index + 1} of {args.rounds}", flush=True)
            for name in round_order(names, round_index):
                measure(name, plan[name], figures, args, workdir / f"r{round_index}")
    report(figures, cpus, args)


def _load_tool(choice: str) -> str:
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "locust"
    if choice == "wrk":
        wrk_path()  # fail early when wrk is missing
    return choice


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", "--duration-s", dest="duration_s", type=int, default=10,
        help="seconds per measurement (whole seconds: wrk takes no less)",
    )  # fmt: skip
    parser.add_argument("--warmup-s", type=int, default=2, help="seconds of load before each measurement")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; the contenders' order rotates each round")
    parser.add_argument("--only", nargs="+", choices=list(GROUPS), default=list(GROUPS), help="groups to measure")
    parser.add_argument("--load", choices=["auto", "wrk", "locust"], default="auto",
                        help="REST load generator (auto: wrk where installed); gRPC always uses Locust")  # fmt: skip
    parser.add_argument("--locust-workers", type=int, help="Locust workers (default: 0 up to 4 cores, else 2)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin servers and load to CPUs")
    parser.add_argument("--bare-server", nargs=2, metavar=("MODEL", "PORT"), help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    main()
