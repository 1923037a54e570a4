"""CPU time per REST infer request at batch 1: the harness (batching off) vs a bare Starlette route, in-process.

Issue 17's per-request overhead, measured without sockets or a load generator, so a shared, noisy
machine still gives repeatable figures: each app is driven as ASGI on one uvloop event loop, one
request at a time (one connection), with the same OIP JSON body and the same small CNN
(``serving_vs_starlette``'s). Per repeat, ``--requests`` requests are timed with
``time.process_time`` (every thread: the loop and the model's instance thread) and
``time.thread_time`` of the loop thread (the harness's own work: routing, decode, admission,
encode, metrics); the figures are medians over ``--repeats``. What uvicorn and the socket add is
the same for both and is left out.

    .venv/bin/python benchmarks/rest_overhead.py --requests 5000 --repeats 7 --rounds 3
    .venv/bin/python benchmarks/rest_overhead.py --requests 20000 --profile 30   # the loop thread's top costs

Prints µs per request for each app (the harness with batching off, and with ``batching.inline``) and
the bare route's CPU time over each app's (the throughput ratio one CPU-bound core would give).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from serving_vs_starlette import bare_app, build_model, request_body

from serving_harness.config import BatchingSettings, RuntimeSettings, ServingConfig
from serving_harness.model import ModelConfig
from serving_harness.protocol.rest import create_app

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
Figures = tuple[float, float]  # (process CPU µs, loop-thread CPU µs) per request
PATH = "/v2/models/cnn/infer"


def harness_app(model_path: Path, *, inline: bool = False) -> Any:
    """The harness as ``serve --threads 1 --instances 1 --max-batch-size 1 [--inline]`` builds it."""
    batching = BatchingSettings(max_batch_size=1, inline=inline)
    settings = ServingConfig(runtime=RuntimeSettings(intra_op_threads=1), batching=batching)
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


async def profile(app: Any, body: bytes, requests: int, top: int) -> str:
    """cProfile of the loop thread over ``requests`` requests (after a warm-up): the ``top`` functions
    by own time, as pstats prints them. The instance thread is not profiled (cProfile sees one thread)."""
    profiler = cProfile.Profile(time.thread_time)  # CPU time: a wait for the GIL is not a cost
    async with app.router.lifespan_context(app):
        await _until_ready(app, body)
        await _timed(app, body, requests // 10)
        profiler.enable()
        await _timed(app, body, requests)
        profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


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
    parser.add_argument("--rounds", type=int, default=1, help="alternate the apps this many times")
    parser.add_argument("--profile", type=int, metavar="TOP", default=0, help="print the loop thread's TOP costs")
    args = parser.parse_args()
    body = request_body()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp) / "cnn.onnx")
        apps = {
            BARE: lambda: bare_app(model),
            "harness, batching off": lambda: harness_app(model),
            "harness, inline": lambda: harness_app(model, inline=True),
        }
        if args.profile:
            for label in list(apps)[1:]:
                print(f"== {label}")
                print(uvloop.run(profile(apps[label](), body, args.requests, args.profile)))
            return
        _report(_alternating(apps, body, args))


BARE = "bare Starlette route"


def _alternating(apps: dict[str, Callable[[], Any]], body: bytes, args: argparse.Namespace) -> dict[str, Figures]:
    """Each app's medians, the apps measured in turn ``args.rounds`` times (so drift in the machine's
    load falls on all of them alike); the median over the rounds."""
    rounds: dict[str, list[Figures]] = {label: [] for label in apps}
    for _ in range(args.rounds):
        for label, make in apps.items():
            rounds[label].append(uvloop.run(measure(make(), body, args.requests, args.repeats)))
    return {
        label: (statistics.median(f[0] for f in got), statistics.median(f[1] for f in got))
        for label, got in rounds.items()
    }


def _report(rows: dict[str, Figures]) -> None:
    print(f"{'app':<24}{'CPU us/req':>12}{'loop thread us/req':>20}{'bare/app':>10}")
    bare = rows[BARE][0]
    for label, (process_us, thread_us) in rows.items():
        print(f"{label:<24}{process_us:>12.1f}{thread_us:>20.1f}{bare / process_us:>9.2f}x")
    print("bare/app: the throughput ratio one CPU-bound core would give (issue 17's target: >= 0.95x)")


if __name__ == "__main__":
    main()
