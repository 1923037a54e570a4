"""Locust as subprocesses: one headless standalone process, or one master and N workers.

Locust monkey-patches its process with gevent, so it never runs inside the workbench. Each process
logs to a file of its own in the step folder; ``load_pids`` are the processes that generate load
(the standalone process, or the workers: the master only aggregates) and are sampled for CPU.

Every process is spawned by the workbench (none by Locust itself), so each one is stopped by
``stop()`` and, on Linux, killed by the kernel when the workbench is (``workbench.measure.children``).

Where the workers run is not the measurement's business: a ``WorkerLauncher`` starts them (here, as
subprocesses, by default). A cluster run puts its own launcher in place for the measurement
(``workers_launched_by``), which starts each worker on a node of the cluster; the master stays here
and listens on the launcher's ``master_host``, which every worker can reach. Each worker samples its
own CPU where it runs, so a saturated worker is seen wherever it is. A worker whose records reach the
step folder late (relayed from another node) says how late (``record_delay_ns``), and the engine cuts
its windows that much further behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from workbench.errors import MeasurementError
from workbench.measure.children import tied_to_parent
from workbench.measure.server import log_tail
from workbench.measure.usage import ProcessSampler, ProcessUsage

__all__ = [
    "LOCUSTFILE",
    "LocalWorker",
    "LocustProcesses",
    "LocustRun",
    "LocustWorker",
    "UsageSampler",
    "WorkerLauncher",
    "workers_launched_by",
]

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


def _free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _base_command(run: LocustRun) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), run.user_class, "--loglevel", "WARNING"]


class UsageSampler(Protocol):
    """CPU and memory of one load process while a step runs (``ProcessSampler`` here, a proxy elsewhere)."""

    def start(self) -> None: ...

    def stop(self) -> ProcessUsage: ...


class LocustWorker(Protocol):
    """One Locust worker process, wherever it runs."""

    where: str  # for the report: "local", or the cluster node it ran on

    def poll(self) -> int | None:
        """Its exit status once it has exited; None while it runs."""

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM)."""

    def wait_or_kill(self, timeout_s: float) -> None:
        """Wait for it to exit; kill it after ``timeout_s``."""

    def sampler(self, interval_s: float) -> UsageSampler:
        """A sampler of its CPU and memory, taken where it runs."""
        ...

    def record_delay_ns(self) -> int:
        """How far behind now its records may still be on their way to the step folder, beyond the flush
        every process has (0 when it writes there itself); the engine cuts no window later than that."""
        ...


class WorkerLauncher(Protocol):
    """Starts the Locust workers of a run; the master listens on ``master_host``."""

    master_host: str

    def launch(self, run: LocustRun, master_port: int, index: int) -> LocustWorker:
        """Start worker ``index`` of ``run``, connecting to the master at ``master_host:master_port``."""
        ...


class LocalWorker:
    """A worker as a subprocess of this process (what a ``WorkerLauncher`` elsewhere runs on its node too)."""

    def __init__(self, process: subprocess.Popen[bytes], where: str = "local") -> None:
        self.process = process
        self.where = where

    @classmethod
    def spawn(
        cls,
        run: LocustRun,
        master: tuple[str, int],
        index: int,
        *,
        env: Mapping[str, str] | None = None,
        where: str = "local",
    ) -> LocalWorker:
        """Start worker ``index`` of ``run`` here, connecting to ``master`` (host, port), with ``env`` (this
        process's environment when None); it reads ``run``'s config and logs in ``run.log_dir``."""
        host, port = master
        command = [*_base_command(run), "--worker", "--master-host", host, "--master-port", str(port)]
        return cls(_spawn(command, run.log_dir / f"locust-worker-{index}.log", _locust_env(run, env)), where)

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_or_kill(self, timeout_s: float) -> None:
        _wait_or_kill(self.process, timeout_s)

    def sampler(self, interval_s: float) -> UsageSampler:
        return ProcessSampler(self.process.pid, interval_s=interval_s)

    def record_delay_ns(self) -> int:
        return 0  # it appends to the step folder itself


class _LocalLauncher:
    """The default: workers as subprocesses here, the master on loopback."""

    master_host = "127.0.0.1"

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def launch(self, run: LocustRun, master_port: int, index: int) -> LocustWorker:
        return LocalWorker.spawn(run, (self.master_host, master_port), index, env=self.env)


_LAUNCHER: ContextVar[WorkerLauncher | None] = ContextVar("workbench_locust_launcher", default=None)


@contextlib.contextmanager
def workers_launched_by(launcher: WorkerLauncher) -> Iterator[None]:
    """Locust workers started in this block are started by ``launcher`` (a cluster's nodes, not this machine)."""
    token = _LAUNCHER.set(launcher)
    try:
        yield
    finally:
        _LAUNCHER.reset(token)


def _locust_env(run: LocustRun, env: Mapping[str, str] | None) -> dict[str, str]:
    """``env`` (this process's environment when None) and what every Locust process of ``run`` reads."""
    return {**(os.environ if env is None else env), CONFIG_ENV: str(run.config_path), "PYTHONUNBUFFERED": "1"}


def _spawn(command: list[str], log_path: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            tied_to_parent(command),  # a killed workbench leaves no Locust process behind
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
        )


class LocustProcesses:
    """The processes of one Locust run; ``stop()`` always leaves none behind."""

    def __init__(self, run: LocustRun, env: dict[str, str]) -> None:
        self.run = run
        self.env = _locust_env(run, env)
        self.launcher: WorkerLauncher = _LAUNCHER.get() or _LocalLauncher(env)
        self.main: subprocess.Popen[bytes] | None = None
        self.workers: list[LocustWorker] = []

    def _main_command(self, master_port: int | None) -> list[str]:
        run = self.run
        command = [
            *_base_command(run), "--headless", "--only-summary", "--host", run.host,
            "-u", str(run.users), "-r", str(max(run.users, 1) * 10), "-t", f"{run.run_time_s}s",
        ]  # fmt: skip
        if master_port is not None:
            command += [
                "--master", "--master-bind-host", self.launcher.master_host, "--master-bind-port", str(master_port),
                "--expect-workers", str(run.workers), "--expect-workers-max-wait", str(WORKERS_WAIT_S),
            ]  # fmt: skip
        return command

    def start(self) -> LocustProcesses:
        """Spawn the processes; if spawning fails (or is interrupted) part way, stop those already started."""
        master_port = _free_port(self.launcher.master_host) if self.run.workers else None
        try:
            self.main = _spawn(self._main_command(master_port), self.run.log_dir / "locust.log", self.env)
            for i in range(self.run.workers if master_port is not None else 0):
                self.workers.append(self.launcher.launch(self.run, master_port or 0, i))
        except BaseException:
            self.stop()
            raise
        logger.debug("locust master pid %s, workers on %s", self.main.pid, [w.where for w in self.workers])
        return self

    def load_samplers(self, interval_s: float) -> list[UsageSampler]:
        """A sampler per process that sends requests (the workers, or the standalone process), not started."""
        if self.workers:
            return [worker.sampler(interval_s) for worker in self.workers]
        return [ProcessSampler(self.main.pid, interval_s=interval_s)] if self.main else []

    def load_places(self) -> list[str]:
        """Where each process that sends requests runs, in ``load_samplers``' order."""
        return [worker.where for worker in self.workers] if self.workers else ["local"]

    def record_delay_ns(self) -> int:
        """How far behind now the latest records may still be arriving, beyond the flush (the slowest worker's)."""
        return max((worker.record_delay_ns() for worker in self.workers), default=0)

    def check_alive(self) -> None:
        """Raise MeasurementError when a Locust process exited before the step asked it to."""
        exited = [(f"pid {self.main.pid}", self.main.poll())] if self.main else []
        exited += [(f"worker {i} on {w.where}", w.poll()) for i, w in enumerate(self.workers)]
        for name, status in exited:
            if status is not None:
                raise MeasurementError(f"Locust ({name}) exited early with status {status}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        logs = sorted(self.run.log_dir.glob("locust*.log"))
        return "\n".join(f"--- {p.name}\n{log_tail(p, 15)}" for p in logs)

    def stop(self) -> None:
        """SIGTERM the master (it tells its workers to quit), then the workers; kill what lingers."""
        if self.main is not None:
            if self.main.poll() is None:
                self.main.send_signal(signal.SIGTERM)
            _wait_or_kill(self.main, STOP_TIMEOUT_S)
        for worker in self.workers:
            worker.terminate()
            worker.wait_or_kill(STOP_TIMEOUT_S)


def _wait_or_kill(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is None:
        logger.warning("locust pid %d did not stop in %.0f s; killing it", process.pid, timeout_s)
        process.kill()
        process.wait()
