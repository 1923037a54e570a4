"""What the serving benchmarks share: a free loopback port, CPU pinning, and a server subprocess that
is ready before it is used and stopped after."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin_to(cpus: set[int]) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, cpus)


@contextlib.contextmanager
def server(command: list[str], port: int, cpus: set[int] | None) -> Iterator[str]:
    """Run ``command`` (a server on ``port``, one OMP thread, pinned to ``cpus``) until the block ends."""
    process = subprocess.Popen(
        command,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: pin_to(cpus)) if cpus else None,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_ready(url: str, timeout_s: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} never became ready")
