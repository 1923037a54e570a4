"""serving_harness vs a bare Starlette route: throughput and p99 at c1 and c32, batching off and on, one run.

The bare route is the ceiling for a Python server: Starlette on uvloop + httptools, no access log,
orjson, the same ONNX model in the same ONNX Runtime settings (1 intra-op thread) run inline in the
handler, on the same OIP JSON body, answering an OIP JSON response, with no validation, metrics,
batcher or limits. The model is a small CNN on 8x8 inputs (issue 17's). Three servers are measured:
the bare route, the harness with batching off (max batch 1) and the harness with max batch 16 and a
500 µs delay. Each is a subprocess on a free loopback port pinned to CPU 0; ``wrk -t1 --latency`` runs
on the other CPUs (``--no-pin`` to turn that off), at 1 and at 32 connections; servers are measured in
rounds whose order rotates, so drift on a shared machine hits each alike.

    apt-get install -y wrk
    .venv/bin/python benchmarks/serving_vs_starlette.py --duration-s 5 --rounds 2

Prints issue 17's table: req/s and p99 per server and concurrency (medians over rounds), with the
harness's ratios to the bare route, and the targets met or missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _processes import free_port, pin_to, server
from _wrk import run_wrk, wrk_path

from workbench.stats import round_order

CHANNELS, SIDE, CLASSES = 8, 8, 10
CONCURRENCIES = (1, 32)
BARE, OFF, ON = "bare Starlette route", "harness, batching off", "harness, max batch 16, 500 us"
# (server, connections, figure) -> the ratio to the bare route it must reach; p99 ratios are "at most".
THROUGHPUT_TARGETS = {(OFF, 32): 1.2, (OFF, 1): 0.95, (ON, 32): 1.4}
P99_TARGETS = {(OFF, 32): 1.0, (ON, 32): 1.0}


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


def request_body() -> bytes:
    x = np.random.default_rng(1).random((1, 1, SIDE, SIDE), dtype=np.float32)
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    return json.dumps(doc).encode()


# ------------------------------------------------------------------------------------ the bare server


def run_bare_server(model_path: str, port: int) -> None:
    """The bare Starlette OIP route, ONNX Runtime inline in the handler (runs in its own process)."""
    import onnxruntime as ort
    import orjson
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])

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

    app = Starlette(routes=[Route("/v2/models/cnn/infer", infer, methods=["POST"]), Route("/v2/health/ready", ready)])
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )


def _commands(model: Path) -> dict[str, Callable[[int], list[str]]]:
    harness = [sys.executable, "-m", "serving_harness", "serve", "--model", str(model), "--name", "cnn"]
    harness += ["--threads", "1", "--instances", "1", "--log-level", "warning"]
    return {
        BARE: lambda port: [sys.executable, __file__, "--bare-server", str(model), str(port)],
        OFF: lambda port: [*harness, "--max-batch-size", "1", "--port", str(port)],
        ON: lambda port: [*harness, "--max-batch-size", "16", "--max-queue-delay-us", "500", "--port", str(port)],
    }


def check_answer(url: str, body: bytes) -> list[float]:
    import httpx

    response = httpx.post(url + "/v2/models/cnn/infer", content=body, headers={"Content-Type": "application/json"})
    response.raise_for_status()
    return [round(v, 5) for v in response.json()["outputs"][0]["data"]]


# ---------------------------------------------------------------------------------------------- main

Figures = dict[tuple[str, int], list[tuple[float, float]]]  # (server, connections) -> [(req/s, p99 ms)] per round


def main() -> None:
    args = _parser().parse_args()
    if args.bare_server:
        run_bare_server(args.bare_server[0], int(args.bare_server[1]))
        return
    wrk_path()  # fail early when wrk is missing
    cpus = set(range(os.cpu_count() or 1))
    server_cpus = {min(cpus)} if args.pin and len(cpus) > 1 else None
    if server_cpus:
        pin_to(cpus - server_cpus)  # wrk inherits it
    with tempfile.TemporaryDirectory() as workdir:
        commands = _commands(build_model(Path(workdir) / "cnn.onnx"))
        figures: Figures = {(name, c): [] for name in commands for c in CONCURRENCIES}
        for round_index in range(args.rounds):
            for name in round_order(list(commands), round_index):
                _measure(name, commands[name], server_cpus, figures, args, round_index)
    _report(figures, args)


def _measure(
    name: str,
    command: Callable[[int], list[str]],
    server_cpus: set[int] | None,
    figures: Figures,
    args: argparse.Namespace,
    round_index: int,
) -> None:
    body = request_body()
    headers = {"Content-Type": "application/json"}
    port = free_port()
    with server(command(port), port, server_cpus) as url:
        answer = check_answer(url, body)
        for connections in CONCURRENCIES:
            route = url + "/v2/models/cnn/infer"
            run_wrk(route, body, headers, connections=connections, duration_s=args.warmup_s)
            result = run_wrk(route, body, headers, connections=connections, duration_s=args.duration_s)
            if result.errors:
                raise RuntimeError(f"{name}: {result.errors} non-2xx answers at c{connections}")
            p99_ms = result.latency_ms["p99"]
            figures[(name, connections)].append((result.requests_per_s, p99_ms))
            print(
                f"round {round_index + 1} {name:<31} c{connections:<3} {result.requests_per_s:8.0f} req/s"
                f"  p99 {p99_ms:6.2f} ms  (logits {answer[:2]})",
                flush=True,
            )


def _median(figures: Figures, key: tuple[str, int], index: int) -> float:
    return statistics.median(sample[index] for sample in figures[key])


def _report(figures: Figures, args: argparse.Namespace) -> None:
    print(f"\n{args.rounds} rounds of {args.duration_s} s; medians over rounds; ratios to the bare route\n")
    print("| server | c1 req/s | c1 p99 ms | c32 req/s | c32 p99 ms |")
    print("|---|---|---|---|---|")
    for name in (BARE, OFF, ON):
        print(f"| {name} | " + " | ".join(_cells(figures, name)) + " |")
    print()
    for (name, c), goal in THROUGHPUT_TARGETS.items():
        rps_ratio = _ratio(figures, name, c, 0)
        print(f"{name}, c{c}: throughput {rps_ratio:.2f}x the bare route (target >= {goal}x): "
              f"{_verdict(rps_ratio >= goal)}")  # fmt: skip
    for (name, c), goal in P99_TARGETS.items():
        p99_ratio = _ratio(figures, name, c, 1)
        print(f"{name}, c{c}: p99 {p99_ratio:.2f}x the bare route's (target <= {goal}x): {_verdict(p99_ratio <= goal)}")
    raw = {f"{name} c{c}": [[round(r), round(p, 3)] for r, p in samples] for (name, c), samples in figures.items()}
    print(json.dumps({"per_round_rps_p99_ms": raw}))


def _ratio(figures: Figures, name: str, connections: int, index: int) -> float:
    """A server's median figure (index 0: req/s, 1: p99) over the bare route's, same connections."""
    return _median(figures, (name, connections), index) / _median(figures, (BARE, connections), index)


def _cells(figures: Figures, name: str) -> list[str]:
    cells = []
    for c in CONCURRENCIES:
        rps, p99_ms = _median(figures, (name, c), 0), _median(figures, (name, c), 1)
        if name == BARE:
            cells += [f"{rps:,.0f}", f"{p99_ms:.2f}"]
        else:
            cells += [
                f"{rps:,.0f} ({_ratio(figures, name, c, 0):.2f}x)",
                f"{p99_ms:.2f} ({_ratio(figures, name, c, 1):.2f}x)",
            ]
    return cells


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration-s", type=int, default=10, help="seconds per measurement (wrk takes whole seconds)")
    parser.add_argument("--warmup-s", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin servers to CPU 0")
    parser.add_argument("--bare-server", nargs=2, metavar=("MODEL", "PORT"), help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    main()
