"""Locust as subprocesses: one headless standalone process, or one master and N workers.

Locust monkey-patches its process with gevent, so it never runs inside the workbench. Each process
logs to a file of its own in the step folder; ``load_pids`` are the processes that generate load
(the standalone process, or the workers: the master only aggregates) and are sampled for CPU.

Every process is spawned by the workbench (none by Locust itself), so each one is stopped by
``stop()`` and, on Linux, killed by the kernel when the workbench is (``workbench.measure.children``).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import MeasurementError
from workbench.measure.children import tied_to_parent
from workbench.measure.server import log_tail

__all__ = ["LOCUSTFILE", "LocustProcesses", "LocustRun"]

logger = logging.getLogger(__name__)

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CONFIG_ENV = "WORKBENCH_LOAD_CONFIG"
WORKERS_WAIT_S = 60
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class LocustRun:
    """What one Locust run is asked to do."""

    host: str
    user_class: str  # ClosedLoopUser | OpenLoopUser
    users: int
    run_time_s: int  # Locust's own hard limit, a backstop behind the workbench's
    config_path: Path
    log_dir: Path
    workers: int = 0  # 0: standalone


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocustProcesses:
    """The processes of one Locust run; ``stop()`` always leaves none behind."""

    def __init__(self, run: LocustRun, env: dict[str, str]) -> None:
        self.run = run
        self.env = {**env, CONFIG_ENV: str(run.config_path), "PYTHONUNBUFFERED": "1"}
        self.main: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def _base(self) -> list[str]:
        return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), self.run.user_class, "--loglevel", "WARNING"]

    def _main_command(self, master_port: int | None) -> list[str]:
        run = self.run
        command = [
            *self._base(), "--headless", "--only-summary", "--host", run.host,
            "-u", str(run.users), "-r", str(max(run.users, 1) * 10), "-t", f"{run.run_time_s}s",
        ]  # fmt: skip
        if master_port is not None:
            command += [
                "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(master_port),
                "--expect-workers", str(run.workers), "--expect-workers-max-wait", str(WORKERS_WAIT_S),
            ]  # fmt: skip
        return command

    def _worker_command(self, master_port: int) -> list[str]:
        return [*self._base(), "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)]

    def _spawn(self, command: list[str], log_name: str) -> subprocess.Popen[bytes]:
        self.run.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.run.log_dir / log_name).open("wb") as log:
            return subprocess.Popen(
                tied_to_parent(command),  # a killed workbench leaves no Locust process behind
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )

    def start(self) -> LocustProcesses:
        """Spawn the processes; if spawning fails (or is interrupted) part way, stop those already started."""
        master_port = _free_port() if self.run.workers else None
        try:
            self.main = self._spawn(self._main_command(master_port), "locust.log")
            for i in range(self.run.workers if master_port is not None else 0):
                worker = self._worker_command(master_port or 0)
                self.workers.append(self._spawn(worker, f"locust-worker-{i}.log"))
        except BaseException:
            self.stop()
            raise
        logger.debug("locust pids %s", self.pids())
        return self

    def pids(self) -> list[int]:
        return [p.pid for p in ([self.main] if self.main else []) + self.workers]

    def load_pids(self) -> list[int]:
        """The processes that send requests."""
        return [p.pid for p in self.workers] if self.workers else self.pids()

    def check_alive(self) -> None:
        """Raise MeasurementError when a Locust process exited before the step asked it to."""
        for process in ([self.main] if self.main else []) + self.workers:
            if process.poll() is not None:
                raise MeasurementError(
                    f"Locust (pid {process.pid}) exited early with status {process.returncode}:\n{self.log_tail()}"
                )

    def log_tail(self) -> str:
        logs = sorted(self.run.log_dir.glob("locust*.log"))
        return "\n".join(f"--- {p.name}\n{log_tail(p, 15)}" for p in logs)

    def stop(self) -> None:
        """SIGTERM the master (it tells its workers to quit), then the workers; kill what lingers."""
        ordered = ([self.main] if self.main else []) + self.workers
        for process in ordered:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            _wait_or_kill(process, STOP_TIMEOUT_S)


def _wait_or_kill(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is None:
        logger.warning("locust pid %d did not stop in %.0f s; killing it", process.pid, timeout_s)
        process.kill()
        process.wait()
