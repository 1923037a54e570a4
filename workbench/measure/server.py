"""Start the serving harness as a subprocess on a free loopback port, wait for ready, stop it, keep its log.

The server that is measured is the server that ships: ``python -m serving_harness serve --model
ARTIFACT --name NAME --host 127.0.0.1 --port 0 --settings-json SETTINGS``. Its stdout and stderr
(JSON log lines, and the one ``{"event": "listening", "port": ...}`` line) go to a log file; a server
that exits is reported with that log's tail.

The server dies with the workbench: ``stop()`` (or leaving the ``with`` block, an exception or an
interrupt included) stops it, and on Linux the kernel kills it if the workbench itself is killed
(see ``workbench.measure.children``).

Example::

    with HarnessServer(artifact, settings, name="digits", log_path=workdir / "server.log") as server:
        ...  # drive load at server.url
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx

from serving_harness.config import ServingConfig
from workbench.errors import MeasurementError
from workbench.measure.children import tied_to_parent

__all__ = ["HOST_ENV", "HarnessServer", "harness_host", "log_tail"]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
HOST_ENV = "WORKBENCH_HARNESS_HOST"  # where measured servers listen instead (see harness_host)
READY_TIMEOUT_S = 120.0  # loading torch and a model on a busy 2-core machine takes a while
STOP_TIMEOUT_S = 15.0
POLL_S = 0.05
TAIL_LINES = 30


def harness_host() -> str:
    """The address measured servers listen on: 127.0.0.1, unless ``WORKBENCH_HARNESS_HOST`` names another
    (a cluster measurement whose Locust workers run on other nodes sets this node's address, which they reach).
    """
    return os.environ.get(HOST_ENV) or HOST


def log_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ('' when there is none)."""
    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class HarnessServer:
    """One ``serving_harness`` process serving one model on ``harness_host()`` (127.0.0.1 unless told)."""

    def __init__(
        self,
        model_path: Path,
        settings: ServingConfig,
        *,
        name: str,
        log_path: Path,
        ready_timeout_s: float = READY_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
        grpc: bool = False,
    ) -> None:
        self.model_path = model_path
        self.settings = settings
        self.name = name
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.env = dict(env) if env is not None else None
        self.port: int | None = None
        self.grpc = grpc  # also serve OIP v2 over gRPC, on a free port (grpc_target)
        self.grpc_port: int | None = None
        self.host = harness_host()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server has not started")
        return f"http://{self.host}:{self.port}"

    @property
    def grpc_target(self) -> str | None:
        """``host:port`` of the gRPC server once started with ``grpc=True``, else None."""
        return f"{self.host}:{self.grpc_port}" if self.grpc_port is not None else None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the server has not started")
        return self._process.pid

    def command(self) -> list[str]:
        settings_json = self.settings.model_dump_json(exclude_none=True)
        return [
            sys.executable, "-m", "serving_harness", "serve",
            "--model", str(self.model_path), "--name", self.name,
            "--host", self.host, "--port", "0", "--settings-json", settings_json,
            *(["--grpc-port", "0"] if self.grpc else []),
        ]  # fmt: skip

    def start(self) -> HarnessServer:
        """Launch the server and wait until ``/v2/health/ready`` answers 200."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                tied_to_parent(self.command()),  # a killed workbench leaves no server behind
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env(),
            )
        logger.info("serving_harness pid %d, log %s", self._process.pid, self.log_path)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _env(self) -> dict[str, str]:
        """The child's environment without the shell's ``SH_*`` variables: a measured server's configuration is
        the ``ServingConfig`` it was given, never whatever this shell exported (``SH_AUTH_TOKEN`` in CI)."""
        base = self.env if self.env is not None else os.environ
        env = {key: value for key, value in base.items() if not key.startswith("SH_")}
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            self.check_alive("while starting")
            if self.port is None:
                self.port = self._listening_port()
            elif self._ready():
                return
            time.sleep(POLL_S)
        raise MeasurementError(
            f"serving_harness was not ready after {self.ready_timeout_s:.0f} s; log tail:\n{self.tail()}"
        )

    def _listening_port(self) -> int | None:
        for line in log_tail(self.log_path, lines=200).splitlines():
            if '"listening"' not in line:
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if self.grpc and "grpc_port" not in entry:
                continue  # the log's listening line; the stdout line also names the gRPC port
            if entry.get("event") == "listening" or entry.get("message") == "listening":
                self.grpc_port = entry.get("grpc_port")
                return int(entry["port"])
        return None

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/health/ready", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def check_alive(self, when: str = "") -> None:
        """Raise MeasurementError, with the log tail, when the server has exited."""
        if self._process is None or self._process.poll() is None:
            return
        code = self._process.returncode
        why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        raise MeasurementError(f"serving_harness died {when} ({why}); log {self.log_path}, tail:\n{self.tail()}")

    def tail(self, lines: int = TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)

    def stop(self) -> int | None:
        """SIGTERM (the harness drains), then SIGKILL after STOP_TIMEOUT_S; return the exit status."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning("serving_harness pid %d ignored SIGTERM; killing it", process.pid)
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> HarnessServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
