"""Run Debian's ``wrk`` against an OIP v2 infer route and read its figures (the benchmarks' ceiling)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    latency_ms: dict[str, float]  # p50, p90, p99
    errors: int


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    return found


def run_wrk(url: str, body: bytes, headers: dict[str, str], *, connections: int, duration_s: int) -> WrkResult:
    """``wrk -t1 -cN -dDs --latency`` POSTing ``body`` to ``url``."""
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "post.lua"
        body_file = Path(folder) / "body.bin"
        body_file.write_bytes(body)
        script.write_text(_lua(body_file, headers))
        command = [
            wrk_path(), "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "--timeout", "10s", "-s", str(script), url,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 30, check=True)
    return _parse(done.stdout)


def _lua(body_file: Path, headers: dict[str, str]) -> str:
    lines = [
        f'local f = io.open("{body_file}", "rb")',
        "wrk.body = f:read('*a')",
        "f:close()",
        'wrk.method = "POST"',
    ]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    return "\n".join(lines) + "\n"


def _parse(text: str) -> WrkResult:
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    latency = {}
    for percent, value, unit in re.findall(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, flags=re.MULTILINE):
        latency[f"p{percent}"] = float(value) * _UNITS_MS[unit]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    return WrkResult(requests_per_s=rate, latency_ms=latency, errors=int(errors.group(1)) if errors else 0)
