"""Load generator capacity: requests/s per Locust process against a trivial endpoint, with wrk as the ceiling.

    .venv/bin/python benchmarks/load_generator_capacity.py [--users 32] [--duration-s 5] [--workers 0 2]

A trivial OIP-shaped endpoint (uvloop + httptools, one canned response, its own process) is far
faster than any Python generator, so the rate each generator reaches is the generator's own ceiling.
The workbench's real load path is measured (FastHttpUser, per-request records, the step's windows),
standalone and with N Locust workers, then ``wrk`` with the same connection count; ratios are taken
within this one run. On a machine where generator and endpoint share few cores, expect the
generator to be flagged saturated: that is what this measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from _wrk import run_wrk

MODEL = "trivial"
RESPONSE_BODY = b'{"model_name":"trivial","outputs":[]}'
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(RESPONSE_BODY),
    RESPONSE_BODY,
)


# ------------------------------------------------------------------------------------------ the trivial endpoint


def serve_trivial() -> None:
    """Answer every request with RESPONSE; print the bound port on stdout."""
    import httptools
    import uvloop

    class Http(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            self.transport.write(RESPONSE)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Http, "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    uvloop.run(main())


@contextlib.contextmanager
def trivial_endpoint() -> Iterator[str]:
    process = subprocess.Popen([sys.executable, __file__, "--serve-trivial"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


# ------------------------------------------------------------------------------------------------- the runs


def locust_rate(url: str, users: int, workers: int, duration_s: float, workdir: Path) -> dict[str, float]:
    from workbench.measure.load.engine import Target, run_profile
    from workbench.measure.load.payloads import write_payloads
    from workbench.recipe.profiles import load_profile

    windows = max(3, int(duration_s))
    profile = load_profile(
        {
            "kind": "concurrency", "users": [users], "warmup_s": 1.0, "window_s": 1.0, "min_windows": windows,
            "max_windows": windows, "min_requests": 1, "tolerance": 10, "latency_tolerance": 10,
        }
    )  # fmt: skip
    batches = [{"x": np.zeros((1, 4), dtype=np.float32)}]
    payloads = write_payloads(batches, workdir / "payloads", binary=False)
    result = run_profile(Target(url, MODEL), profile, payloads, workdir=workdir / f"w{workers}", workers=workers)
    (step,) = result.steps
    processes = max(1, workers)
    return {
        "processes": processes,
        "rps": step.measurement.throughput_rps,
        "rps_per_process": step.measurement.throughput_rps / processes,
        "cpu_percent": step.extra["generator_cpu_percent_mean"],
        "p50_ms": step.measurement.latency_ms["p50"] or float("nan"),
        "saturated": float("generator_saturated" in step.measurement.flags),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-trivial", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--users", type=int, default=32, help="concurrent connections (Locust users, wrk -c)")
    parser.add_argument("--duration-s", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="Locust workers per run (0: standalone)")
    args = parser.parse_args()
    if args.serve_trivial:
        serve_trivial()
        return
    logging.basicConfig(level=logging.WARNING)
    from workbench.measure.load.payloads import write_payloads

    rows: list[tuple[str, dict[str, float]]] = []
    with trivial_endpoint() as url, tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        for workers in args.workers:
            label = "locust standalone" if workers == 0 else f"locust {workers} workers"
            rows.append((label, locust_rate(url, args.users, workers, args.duration_s, workdir)))
        files = write_payloads([{"x": np.zeros((1, 4), dtype=np.float32)}], workdir / "wrk", binary=False)
        body = files.bin.read_bytes()
        wrk = run_wrk(f"{url}/v2/models/{MODEL}/infer", body, {"Content-Type": "application/json"},
                      connections=args.users, duration_s=args.duration_s)  # fmt: skip
    ceiling = wrk.requests_per_s
    print(f"\ngenerator capacity, {args.users} connections, trivial endpoint, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'generator':<22}{'procs':>6}{'req/s':>10}{'req/s/proc':>12}{'gen CPU%':>10}{'p50 ms':>9}{'÷ wrk':>8}")
    for label, row in rows:
        print(
            f"{label:<22}{row['processes']:>6.0f}{row['rps']:>10.0f}{row['rps_per_process']:>12.0f}"
            f"{row['cpu_percent']:>10.0f}{row['p50_ms']:>9.3f}{row['rps'] / ceiling:>8.3f}"
            + ("  (saturated)" if row["saturated"] else "")
        )
    print(
        f"{'wrk (ceiling)':<22}{1:>6}{ceiling:>10.0f}{ceiling:>12.0f}{'':>10}{wrk.latency_ms.get('p50', float('nan')):>9.3f}{1:>8.3f}"
    )


if __name__ == "__main__":
    main()
