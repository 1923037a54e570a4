"""CPU time per REST infer request at batch 1: the harness (batching off) vs a bare Starlette route, in-process.

Issue 17's per-request overhead, measured without sockets or a load generator, so a shared, noisy
machine still gives repeatable figures: each app is driven as ASGI on one uvloop event loop, one
request at a time (one connection), with the same OIP JSON body and the same small CNN
(``serving_vs_starlette``'s). Per repeat, ``--requests`` requests are timed with
``time.process_time`` (every thread: the loop and the model's instance thread) and
``time.thread_time`` of the loop thread (the harness's own work: routing, decode, admission,
encode, metrics); the figures are medians over ``--repeats``. What uvicorn and the socket add is
the same for both and is left out.

    .venv/bin/python benchmarks/rest_overhead.py --requests 5000 --repeats 7

Prints µs per request for each app and the bare route's CPU time over the harness's (the throughput
ratio one CPU-bound core would give).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import uvloop
from serving_vs_starlette import build_model, request_body

from serving_harness.config import BatchingSettings, RuntimeSettings, ServingConfig
from serving_harness.model import ModelConfig
from serving_harness.protocol.rest import create_app

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
PATH = "/v2/models/cnn/infer"


def bare_app(model_path: Path) -> Any:
    """The bare route of ``serving_vs_starlette``: ONNX Runtime inline in a Starlette handler."""
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

    return Starlette(routes=[Route(PATH, infer, methods=["POST"])])


def harness_app(model_path: Path) -> Any:
    """The harness as ``serve --threads 1 --instances 1 --max-batch-size 1`` builds it."""
    settings = ServingConfig(runtime=RuntimeSettings(intra_op_threads=1), batching=BatchingSettings(max_batch_size=1))
    return create_app([ModelConfig(name="cnn", path=model_path)], settings)


def _scope(body: bytes) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _one(app: Asgi, body: bytes) -> int:
    """One request through ``app``; its status."""
    message = {"type": "http.request", "body": body, "more_body": False}
    status = 0

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: dict[str, Any]) -> None:
        nonlocal status
        if event["type"] == "http.response.start":
            status = event["status"]

    await app(_scope(body), receive, send)
    return status


async def _timed(app: Asgi, body: bytes, requests: int) -> tuple[float, float]:
    """(process CPU µs, loop-thread CPU µs) per request over ``requests`` sequential requests."""
    process_s, thread_s = time.process_time(), time.thread_time()
    for _ in range(requests):
        status = await _one(app, body)
        assert status == 200, status
    per = 1e6 / requests
    return (time.process_time() - process_s) * per, (time.thread_time() - thread_s) * per


async def measure(app: Any, body: bytes, requests: int, repeats: int) -> tuple[float, float]:
    """Medians over ``repeats`` of ``_timed``, the app's lifespan running (its models loaded)."""
    async with app.router.lifespan_context(app):
        await _until_ready(app, body)
        await _timed(app, body, requests // 10)  # warm-up
        figures = [await _timed(app, body, requests) for _ in range(repeats)]
    return statistics.median(f[0] for f in figures), statistics.median(f[1] for f in figures)


async def _until_ready(app: Asgi, body: bytes) -> None:
    for _ in range(200):  # the models load in the background: up to 10 s
        if await _one(app, body) == 200:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the model did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000, help="requests per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    body = request_body()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp) / "cnn.onnx")
        rows = {}
        for label, app in (("bare Starlette route", bare_app(model)), ("harness, batching off", harness_app(model))):
            rows[label] = uvloop.run(measure(app, body, args.requests, args.repeats))
    print(f"{'app':<24}{'CPU us/req':>12}{'loop thread us/req':>20}")
    for label, (process_us, thread_us) in rows.items():
        print(f"{label:<24}{process_us:>12.1f}{thread_us:>20.1f}")
    bare, harness = rows["bare Starlette route"][0], rows["harness, batching off"][0]
    print(f"bare CPU / harness CPU: {bare / harness:.2f}x (issue 17's target for req/s at 1 connection: >= 0.95x)")


if __name__ == "__main__":
    main()
