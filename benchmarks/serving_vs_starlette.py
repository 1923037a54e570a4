"""serving_harness vs a bare Starlette endpoint: throughput at batch 1, equal concurrency, one run.

The bare endpoint is the ceiling for a Python server: Starlette on uvloop + httptools, no access log,
orjson, the same ONNX model in the same ONNX Runtime settings (1 intra-op thread), run in a one-thread
executor on the same OIP JSON body, answering an OIP JSON response, with no validation, metrics,
batcher or limits. Both servers are subprocesses on free loopback ports, driven by the same closed-loop
load (``wrk`` when installed, else a small asyncio keep-alive client), alternating in rounds so drift
hits both alike. The server processes share CPU 0 and the load generator gets the others (``--no-pin``
to turn that off).

    .venv/bin/python benchmarks/serving_vs_starlette.py --duration-s 10 --connections 16 --rounds 2

Prints req/s of each, per round, and the ratio harness / bare (goal: >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _processes import free_port, pin_to, server

from workbench.stats import round_order

IN_FEATURES, HIDDEN, CLASSES = 64, 128, 10


# ----------------------------------------------------------------------------------------- the model


def build_model(path: Path) -> Path:
    """A digits-sized MLP: x FP32 [-1, 64] -> relu(x W1 + b1) W2 + b2 -> logits [-1, 10]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((IN_FEATURES, HIDDEN)).astype(np.float32) * 0.1,
        "b1": np.zeros(HIDDEN, dtype=np.float32),
        "w2": rng.standard_normal((HIDDEN, CLASSES)).astype(np.float32) * 0.1,
        "b2": np.zeros(CLASSES, dtype=np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["l0"]),
        helper.make_node("Add", ["l0", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", IN_FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def request_body() -> bytes:
    x = np.random.default_rng(1).random((1, IN_FEATURES), dtype=np.float32)
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, IN_FEATURES], "data": x.ravel().tolist()}]}
    return json.dumps(doc).encode()


# ------------------------------------------------------------------------------------ the bare server


def run_bare_server(model_path: str, port: int) -> None:
    """The bare Starlette OIP endpoint (runs in its own process)."""
    from concurrent.futures import ThreadPoolExecutor

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
    executor = ThreadPoolExecutor(max_workers=1)

    async def infer(request: Request) -> Response:
        doc = orjson.loads(await request.body())
        tensor = doc["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        loop = asyncio.get_running_loop()
        (logits,) = await loop.run_in_executor(executor, session.run, None, {"x": x})
        out = {"name": "logits", "datatype": "FP32", "shape": list(logits.shape), "data": logits.ravel()}
        answer = {"model_name": "mlp", "model_version": "1", "outputs": [out]}
        return Response(orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    async def ready(request: Request) -> Response:
        return Response(b'{"ready":true}', media_type="application/json")

    app = Starlette(routes=[Route("/v2/models/mlp/infer", infer, methods=["POST"]), Route("/v2/health/ready", ready)])
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )


# ------------------------------------------------------------------------------------------- servers


def check_answer(url: str, body: bytes) -> list[float]:
    import httpx

    response = httpx.post(url + "/v2/models/mlp/infer", content=body, headers={"Content-Type": "application/json"})
    response.raise_for_status()
    return [round(v, 5) for v in response.json()["outputs"][0]["data"]]


# ---------------------------------------------------------------------------------------------- load


def drive(url: str, body: bytes, *, connections: int, duration_s: float, cpus: set[int] | None) -> float:
    """Closed-loop load at ``connections`` concurrent keep-alive connections; returns req/s."""
    if shutil.which("wrk"):
        return _drive_wrk(url, body, connections=connections, duration_s=duration_s, cpus=cpus)
    return asyncio.run(_drive_asyncio(url, body, connections=connections, duration_s=duration_s))


def _drive_wrk(url: str, body: bytes, *, connections: int, duration_s: float, cpus: set[int] | None) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = [==[{body.decode()}]==]\n')
        script.write('wrk.headers["Content-Type"] = "application/json"\n')
    threads = max(1, min(len(cpus) if cpus else 1, connections))
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "-s", script.name]
    command.append(url + "/v2/models/mlp/infer")
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, preexec_fn=(lambda: pin_to(cpus)) if cpus else None
    ).stdout
    Path(script.name).unlink()
    if "Non-2xx" in output:
        raise RuntimeError(f"errors under load:\n{output}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match is None:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    return float(match.group(1))


async def _drive_asyncio(url: str, body: bytes, *, connections: int, duration_s: float) -> float:
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    deadline = time.monotonic() + duration_s

    async def connection() -> int:
        reader, writer = await asyncio.open_connection(host, int(port))
        done = 0
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode(errors="replace"))
            length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            done += 1
        writer.close()
        return done

    started = time.monotonic()
    counts = await asyncio.gather(*(connection() for _ in range(connections)))
    return sum(counts) / (time.monotonic() - started)


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    args = _parser().parse_args()
    if args.bare_server:
        run_bare_server(args.bare_server[0], int(args.bare_server[1]))
        return
    cpus = set(range(os.cpu_count() or 1))
    server_cpus = {min(cpus)} if args.pin and len(cpus) > 1 else None
    load_cpus = cpus - server_cpus if server_cpus else None
    body = request_body()
    with tempfile.TemporaryDirectory() as workdir:
        model = build_model(Path(workdir) / "mlp.onnx")
        commands = _commands(model)
        results: dict[str, list[float]] = {name: [] for name in commands}
        for round_index in range(args.rounds):
            for name in round_order(list(commands), round_index):
                command = commands[name]
                port = free_port()
                with server([*command(port)], port, server_cpus) as url:
                    answer = check_answer(url, body)
                    drive(url, body, connections=args.connections, duration_s=args.warmup_s, cpus=load_cpus)
                    rps = drive(url, body, connections=args.connections, duration_s=args.duration_s, cpus=load_cpus)
                results[name].append(rps)
                print(f"round {round_index + 1} {name:<16} {rps:9.1f} req/s  (first logits {answer[:2]})", flush=True)
        _report(results, args)


def _commands(model: Path) -> dict[str, Callable[[int], list[str]]]:
    harness = [sys.executable, "-m", "serving_harness", "serve", "--model", str(model), "--name", "mlp"]
    harness += ["--threads", "1", "--instances", "1", "--max-batch-size", "1", "--log-level", "warning"]
    return {
        "serving_harness": lambda port: [*harness, "--port", str(port)],
        "bare_starlette": lambda port: [sys.executable, __file__, "--bare-server", str(model), str(port)],
    }


def _report(results: dict[str, list[float]], args: argparse.Namespace) -> None:
    ratios = [h / b for h, b in zip(results["serving_harness"], results["bare_starlette"], strict=True)]
    summary = {
        "connections": args.connections,
        "duration_s": args.duration_s,
        "load": "wrk" if shutil.which("wrk") else "asyncio",
        "harness_rps": [round(v, 1) for v in results["serving_harness"]],
        "bare_starlette_rps": [round(v, 1) for v in results["bare_starlette"]],
        "ratio_per_round": [round(r, 3) for r in ratios],
        "ratio_median": round(statistics.median(ratios), 3),
    }
    print(json.dumps(summary))
    print(f"serving_harness / bare Starlette throughput at batch 1: {summary['ratio_median']:.3f}x (goal >= 0.9)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin servers to CPU 0")
    parser.add_argument("--bare-server", nargs=2, metavar=("MODEL", "PORT"), help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    main()
