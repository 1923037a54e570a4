"""Helpers for the report tests: results frames with served rows, and a headless Chromium driven over
the DevTools protocol (a websocket; no Playwright, no Selenium)."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from websockets.sync.client import ClientConnection, connect

GOLDEN_RUN = Path(__file__).parent / "golden" / "v1" / "digits-cpu" / "0001-20261123T234441Z"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def row(variant: str, **figures: Any) -> dict[str, Any]:
    """One results row of an ok variant (what results.parquet holds), figures given by column name."""
    base: dict[str, Any] = {
        "run_id": "0001-20260101T000000Z",
        "variant": variant,
        "status": "ok",
        "reason": None,
        "runtime": "onnxruntime",
        "metric": "accuracy",
        "accuracy": 0.98,
        "accuracy_drop": 0.0,
        "mode": "inprocess",
        "case": "b1",
        "batch_size": 1,
        "flags": "",
    }
    return {**base, **figures}


def served(variant: str, users: int, rps: float, p99_ms: float, **figures: Any) -> dict[str, Any]:
    """A served load step at ``users`` closed-loop users."""
    step = {
        "mode": "served",
        "case": f"c{users}",
        "concurrency": users,
        "throughput_rps": rps,
        "throughput_items_per_s": rps,
        "latency_ms_p50": p99_ms / 3,
        "latency_ms_p99": p99_ms,
        "error_rate": 0.0,
    }
    return row(variant, **{**step, **figures})


def frame(*rows: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def run_cli(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    """``workbench ARGV...`` in this process, through the real entry point; its exit code."""
    from workbench.cli import main

    monkeypatch.setattr(sys, "argv", ["workbench", *argv])
    try:
        main()
    except SystemExit as done:
        return int(done.code or 0)
    return 0


# ----------------------------------------------------------------------------------------------- headless browser


def chromium() -> str | None:
    """The Chromium binary on PATH, if any."""
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


@dataclass
class PageCheck:
    """What the browser saw: every <img> (complete, natural width), console and log errors, the title."""

    title: str = ""
    images: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    screenshot: bytes = b""


class _Devtools:
    """A minimal DevTools-protocol client over one websocket (flattened target sessions)."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, session: str | None = None, timeout_s: float = 30.0, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            reply = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self.events.append(reply)
        raise TimeoutError(method)

    def wait_for(self, method: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(e.get("method") == method for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(method)
            self.events.append(json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic()))))


@contextmanager
def _browser(binary: str) -> Iterator[str]:
    """Start headless Chromium on a free DevTools port; yield its browser websocket URL."""
    # Its own session, so the whole tree (renderer, GPU and utility processes) is stopped together before the
    # profile folder goes: a child still writing into it made the cleanup fail. No background networking: the
    # page is local, and nothing may reach past loopback.
    with tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--remote-debugging-port=0",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while len(port_file.read_text().splitlines() if port_file.exists() else []) < 2:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("chromium did not open its DevTools port")
                time.sleep(0.05)
            port, path = port_file.read_text().splitlines()[:2]
            yield f"ws://127.0.0.1:{port}{path}"
        finally:
            _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the browser's process group, SIGKILL what is left after 10 s, and reap the browser."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # children outlive the browser by a moment
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def inspect_page(path: Path, *, width_px: int = 1280) -> PageCheck:
    """Load ``path`` in headless Chromium; report its images, console/log errors and a full-page screenshot."""
    binary = chromium()
    assert binary is not None, "no chromium on PATH"
    with _browser(binary) as url, connect(url, max_size=None, open_timeout=30) as socket:
        tools = _Devtools(socket)
        target = tools.call("Target.createTarget", url="about:blank")["targetId"]
        session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            tools.call(domain, session)
        tools.call(
            "Emulation.setDeviceMetricsOverride", session, width=width_px, height=900, deviceScaleFactor=1, mobile=False
        )
        tools.call("Page.navigate", session, url=path.resolve().as_uri())
        tools.wait_for("Page.loadEventFired")
        probe = "JSON.stringify({title: document.title, images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}))})"
        found = json.loads(
            tools.call("Runtime.evaluate", session, expression=probe, returnByValue=True)["result"]["value"]
        )
        shot = tools.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)["data"]
        return PageCheck(found["title"], found["images"], _errors(tools.events), base64.b64decode(shot))


def _errors(events: list[dict[str, Any]]) -> list[str]:
    """Console errors, uncaught exceptions and browser log errors (CSP violations, failed loads)."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in {"error", "assert"}:
            found.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            found.append(str(params.get("exceptionDetails", {}).get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            found.append(str(params["entry"].get("text")))
    return found
