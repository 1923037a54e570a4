"""What drift monitoring costs a served model: p99 with it on and off, in one run, as a ratio.

Two serving_harness processes serve the same digits-shaped MLP (input [batch, 1, 8, 8] -> logits
[batch, 10]) with the bundle settings (version label, uvloop, httptools); one has a drift baseline,
the other none. Both run at once (on the same CPU); the same closed-loop load (an asyncio keep-alive
client timing every request at ns precision) drives one, then the other, in short windows, the order
alternating every pair, so what else the machine does hits both alike; a scraper reads ``/metrics``
every ``--scrape-interval-s`` meanwhile (1 s: fifteen times Prometheus' default, so the PSI computed at
scrape time is counted generously). Request bodies cycle through 64 different rows from the
baseline's distribution, so the drift window holds varied data.

    .venv/bin/python benchmarks/drift_overhead.py --pairs 20 --window-s 1 --connections 8

Prints the median over pairs of each pair's p99 ratio (drift on / off; goal: below 1.05), p50 and
throughput ratios, and each pair's p99 ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from _processes import free_port
from _processes import server as serve

from workbench.stats import round_order

ROWS, HIDDEN, CLASSES = 360, 128, 10


def build_model(path: Path) -> Path:
    """A digits-sized MLP: input [-1, 1, 8, 8] -> reshape -> relu(x W1) W2 -> logits [-1, 10]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "flat"),
        numpy_helper.from_array(rng.standard_normal((64, HIDDEN)).astype(np.float32) * 0.3, "w1"),
        numpy_helper.from_array(rng.standard_normal((HIDDEN, CLASSES)).astype(np.float32) * 0.3, "w2"),
    ]
    nodes = [
        helper.make_node("Reshape", ["input", "flat"], ["x"]),
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        initializer=weights,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def digit_like_data() -> np.ndarray:
    """Images with digits' value range: mostly dark, some bright pixels."""
    rng = np.random.default_rng(1)
    return (rng.random((ROWS, 1, 8, 8)) ** 3).astype(np.float32)


def build_baseline(model: Path, path: Path) -> Path:
    """The drift baseline of the data and the model's outputs on it, as a bundle carries it."""
    import onnxruntime as ort

    from serving_harness.drift import build_baseline as baseline_of

    data = digit_like_data()
    (logits,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": data})
    path.write_text(baseline_of({"input": data}, {"logits": logits}).model_dump_json())
    return path


def request_bodies() -> list[bytes]:
    data = digit_like_data()[:64]
    return [
        json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": row.ravel().tolist()}]}
        ).encode()
        for row in data
    ]


# ------------------------------------------------------------------------------------------------ server


def run_server(model: str, port: int, baseline: str | None) -> None:
    """One harness process: the model with (or without) a drift baseline, bundle settings."""
    import uvicorn

    from serving_harness.config import ServingConfig
    from serving_harness.model import ModelConfig
    from serving_harness.protocol.rest import create_app
    from serving_harness.server import bind_socket, uvicorn_config

    settings = ServingConfig.model_validate({"runtime": {"intra_op_threads": 1, "inter_op_threads": 1}})
    config = ModelConfig(
        name="digits", path=Path(model), version="1", drift_baseline=Path(baseline) if baseline else None
    )
    app = create_app([config], settings, version_label=True)
    sock = bind_socket("127.0.0.1", port)
    uvicorn.Server(uvicorn_config(app, settings, log_level="warning")).run(sockets=[sock])


@contextlib.contextmanager
def server(model: Path, baseline: Path | None, cpus: set[int] | None) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, __file__, "--serve", str(model), str(port), str(baseline or "")]
    with serve(command, port, cpus) as url:
        yield url


# -------------------------------------------------------------------------------------------------- load


async def drive(
    url: str, bodies: list[bytes], *, connections: int, duration_s: float, scrape_s: float
) -> dict[str, float]:
    """Closed-loop load; every request's latency in ns; a scraper on /metrics meanwhile."""
    host, port = url.removeprefix("http://").split(":")
    head = f"POST /v2/models/digits/infer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    requests = [(head + f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]
    deadline = time.monotonic() + duration_s
    latencies: list[int] = []

    async def connection(offset: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        index = offset
        while time.monotonic() < deadline:
            started = time.perf_counter_ns()
            writer.write(requests[index % len(requests)])
            await _read_response(reader)
            latencies.append(time.perf_counter_ns() - started)
            index += 1
        writer.close()

    async def scraper() -> int:
        reader, writer = await asyncio.open_connection(host, int(port))
        scrapes = 0
        while time.monotonic() < deadline:
            writer.write(f"GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            await _read_response(reader)
            scrapes += 1
            await asyncio.sleep(scrape_s)
        writer.close()
        return scrapes

    started = time.monotonic()
    scrapes, *_ = await asyncio.gather(scraper(), *(connection(i * 7) for i in range(connections)))
    elapsed = time.monotonic() - started
    ms = np.asarray(latencies, dtype=np.float64) / 1e6
    return {
        "requests": len(latencies),
        "throughput_rps": len(latencies) / elapsed,
        "latency_ms_p50": float(np.percentile(ms, 50)),
        "latency_ms_p99": float(np.percentile(ms, 99)),
        "scrapes": float(scrapes or 0),
    }


async def _read_response(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    length = re.search(rb"content-length: (\d+)", head.lower())
    if length is None:
        raise RuntimeError("a response without content-length")
    await reader.readexactly(int(length.group(1)))


def drift_rows(url: str) -> float:
    import httpx

    match = re.search(r"^sh_drift_window_rows\{[^}]*\} ([\d.]+)$", httpx.get(url + "/metrics").text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


# -------------------------------------------------------------------------------------------------- main


def main() -> None:
    args = _parser().parse_args()
    if args.serve:
        model, port, baseline = args.serve
        run_server(model, int(port), baseline or None)
        return
    cpus = set(range(os.cpu_count() or 1))
    server_cpus = {min(cpus)} if args.pin and len(cpus) > 1 else None
    bodies = request_bodies()
    results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as workdir:
        model = build_model(Path(workdir) / "mlp.onnx")
        baseline = build_baseline(model, Path(workdir) / "baseline.json")
        with server(model, None, server_cpus) as off_url, server(model, baseline, server_cpus) as on_url:
            urls = {"off": off_url, "on": on_url}
            for url in urls.values():
                _drive(url, bodies, args, args.warmup_s)
            for pair in range(args.pairs):
                for name in round_order(("off", "on"), pair):  # neither always goes first
                    results[name].append(_drive(urls[name], bodies, args, args.window_s))
            rows = drift_rows(on_url)
    _report(results, args, rows)


def _drive(url: str, bodies: list[bytes], args: argparse.Namespace, duration_s: float) -> dict[str, float]:
    before = server_latency(url)
    figures = asyncio.run(
        drive(url, bodies, connections=args.connections, duration_s=duration_s, scrape_s=args.scrape_interval_s)
    )
    after = server_latency(url)
    figures["server_ms_mean"] = 1000 * (after[0] - before[0]) / max(after[1] - before[1], 1.0)
    return figures


def server_latency(url: str) -> tuple[float, float]:
    """The server's own request latency counters (sum in seconds, count), from /metrics."""
    import httpx

    text = httpx.get(url + "/metrics").text
    values = []
    for kind in ("sum", "count"):
        match = re.search(rf"^sh_request_duration_seconds_{kind}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE)
        values.append(float(match.group(1)) if match else 0.0)
    return values[0], values[1]


def _report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace, rows: float) -> None:
    ratios = {
        key: [on[key] / off[key] for on, off in zip(results["on"], results["off"], strict=True)]
        for key in ("latency_ms_p99", "latency_ms_p50", "throughput_rps", "server_ms_mean")
    }
    medians = {key: round(statistics.median(values), 3) for key, values in ratios.items()}
    summary = {
        "pairs": args.pairs,
        "window_s": args.window_s,
        "connections": args.connections,
        "scrape_interval_s": args.scrape_interval_s,
        "drift_window_rows_at_end": rows,
        "p99_ms_off_median": round(statistics.median(r["latency_ms_p99"] for r in results["off"]), 3),
        "p99_ms_on_median": round(statistics.median(r["latency_ms_p99"] for r in results["on"]), 3),
        "rps_off_median": round(statistics.median(r["throughput_rps"] for r in results["off"]), 1),
        "rps_on_median": round(statistics.median(r["throughput_rps"] for r in results["on"]), 1),
        "p99_ratio_per_pair": [round(v, 3) for v in ratios["latency_ms_p99"]],
        **{f"{key}_ratio_median": value for key, value in medians.items()},
    }
    print(json.dumps(summary))
    print(
        f"drift monitoring on / off, median of {args.pairs} paired windows: p99 {medians['latency_ms_p99']:.3f}x "
        f"(goal < 1.05), p50 {medians['latency_ms_p50']:.3f}x, throughput {medians['throughput_rps']:.3f}x, "
        f"server-side mean latency {medians['server_ms_mean']:.3f}x"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=20, help="windows per server, alternating")
    parser.add_argument("--window-s", type=float, default=1.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--scrape-interval-s", type=float, default=1.0)
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin servers to CPU 0")
    parser.add_argument("--serve", nargs=3, metavar=("MODEL", "PORT", "BASELINE"), help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    main()
