"""Serve a bundle the way production would and check it over HTTP: the last step of `make demo`.

    python examples/serve_check.py bundles/digits-demo [--requests 200]

Starts ``python -m serving_harness serve BUNDLE --port 0 --verify`` (checksums and golden outputs are
checked before it listens), waits for ready, sends the bundle's golden inputs one row per request as
OIP v2 JSON and compares the answers with the golden outputs and their tolerances, times a short
bounded burst, reads /metrics, then stops the server with SIGTERM (it drains and exits 0).
Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

READY_TIMEOUT_S = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--requests", type=int, default=200, help="requests in the timed burst (bounded)")
    args = parser.parse_args()
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    log_path = args.bundle.parent / f"{args.bundle.name}.serve.log"  # the server's JSON log lines
    log = log_path.open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "serving_harness", "serve", str(args.bundle), "--port", "0", "--verify"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        url = _listening_url(server)
        with httpx.Client(base_url=url, timeout=10.0) as client:
            _wait_ready(client)
            name = manifest["name"]
            mismatches = _golden_check(client, name, args.bundle, manifest["golden"])
            latencies = _burst(client, name, args.bundle, manifest["golden"], args.requests)
            metrics = client.get("/metrics").text
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
        log.close()
    p50, p99 = np.percentile(latencies, [50, 99])
    served = sum(1 for line in metrics.splitlines() if line.startswith("sh_requests_total"))
    print(f"served {name} {manifest['version']} at {url}: golden {'ok' if not mismatches else 'FAILED'}, "
          f"{len(latencies)} requests p50 {p50:.3f} ms p99 {p99:.3f} ms (client side, one connection), "
          f"{served} request series in /metrics, drained exit {code}")  # fmt: skip
    for line in mismatches:
        print(f"  {line}", file=sys.stderr)
    print(f"server log: {log_path}")
    return 0 if not mismatches and code == 0 else 1


def _listening_url(server: subprocess.Popen[str]) -> str:
    assert server.stdout is not None
    for line in server.stdout:
        event = json.loads(line)
        if event.get("event") == "listening":
            return str(event["url"])
    raise SystemExit(f"the server exited ({server.wait()}) before it listened")


def _wait_ready(client: httpx.Client) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if client.get("/v2/health/ready").status_code == 200:
            return
        time.sleep(0.1)
    raise SystemExit(f"not ready within {READY_TIMEOUT_S:g} s")


def _request(name: str, arrays: dict[str, np.ndarray], row: int) -> dict[str, Any]:
    inputs = [
        {"name": key, "datatype": "FP32", "shape": [1, *value.shape[1:]], "data": value[row].ravel().tolist()}
        for key, value in arrays.items()
    ]
    return {"id": f"check-{row}", "inputs": inputs}


def _golden_check(client: httpx.Client, name: str, bundle: Path, golden: dict[str, Any]) -> list[str]:
    inputs = dict(np.load(bundle / golden["inputs"]))
    expected = dict(np.load(bundle / golden["outputs"]))
    problems = []
    for row in range(len(next(iter(inputs.values())))):
        reply = client.post(f"/v2/models/{name}/infer", json=_request(name, inputs, row))
        if reply.status_code != 200:
            problems.append(f"row {row}: HTTP {reply.status_code} {reply.text[:200]}")
            continue
        for output in reply.json()["outputs"]:
            want = expected[output["name"]][row].ravel()
            got = np.asarray(output["data"], dtype=want.dtype)
            atol = golden["atol"].get(output["name"], 0.0)
            if not np.allclose(got, want, rtol=golden["rtol"], atol=atol):
                problems.append(f"row {row} {output['name']}: max |diff| {np.max(np.abs(got - want)):.4g} > {atol:.4g}")
    return problems


def _burst(client: httpx.Client, name: str, bundle: Path, golden: dict[str, Any], count: int) -> list[float]:
    inputs = dict(np.load(bundle / golden["inputs"]))
    rows = len(next(iter(inputs.values())))
    bodies = [_request(name, inputs, row % rows) for row in range(count)]
    latencies = []
    for body in bodies:
        started = time.perf_counter()
        client.post(f"/v2/models/{name}/infer", json=body).raise_for_status()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


if __name__ == "__main__":
    raise SystemExit(main())
