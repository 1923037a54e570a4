"""CPU and memory of a process tree, sampled while it is measured (the harness, the load generator)."""

from __future__ import annotations

import contextlib
import threading
from typing import TypedDict

import psutil

__all__ = ["ProcessSampler", "ProcessUsage"]

_MB = 1024 * 1024


class ProcessUsage(TypedDict):
    """What a ``ProcessSampler`` saw. ``cpu_percent`` is psutil's: 100 is one core fully busy."""

    cpu_percent_mean: float
    cpu_percent_max: float
    rss_mb_max: float
    samples: int


class ProcessSampler:
    """Samples CPU and resident memory of a process and its children in a daemon thread.

    Example::

        sampler = ProcessSampler(server.pid, interval_s=0.2)
        sampler.start()
        ...  # drive load
        usage = sampler.stop()  # {"cpu_percent_mean": 97.5, "cpu_percent_max": 101.2, "rss_mb_max": 312.0, ...}
    """

    MIN_INTERVAL_S = 0.01
    MAX_INTERVAL_S = 10.0

    def __init__(self, pid: int, *, interval_s: float = 0.1, include_children: bool = True) -> None:
        if not self.MIN_INTERVAL_S <= interval_s <= self.MAX_INTERVAL_S:
            raise ValueError(f"interval_s must be in [{self.MIN_INTERVAL_S}, {self.MAX_INTERVAL_S}], got {interval_s}")
        self.pid = pid
        self.interval_s = interval_s
        self.include_children = include_children
        self._root: psutil.Process  # set by start()
        self._procs: dict[int, psutil.Process] = {}
        self._cpu: list[float] = []
        self._rss_bytes: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def samples_taken(self) -> int:
        """Readings recorded so far; a caller can wait on it instead of sleeping a guessed time."""
        return len(self._cpu)

    @property
    def sampling(self) -> bool:
        """True while the sampling thread runs: from ``start`` until ``stop`` or the process exiting."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start sampling; raises ``psutil.NoSuchProcess`` when the process is not there."""
        if self._thread is not None:
            raise RuntimeError("ProcessSampler already started")
        self._root = psutil.Process(self.pid)
        self._sample()  # primes cpu_percent: the first reading of each process is meaningless
        self._cpu.clear()
        self._rss_bytes.clear()
        self._thread = threading.Thread(target=self._run, name=f"ProcessSampler-{self.pid}", daemon=True)
        self._thread.start()

    def stop(self) -> ProcessUsage:
        """Stop sampling and summarise; takes one last sample when none was taken yet."""
        if self._thread is None:
            raise RuntimeError("ProcessSampler was not started")
        self._stop.set()
        self._thread.join()
        if not self._cpu:
            self._sample()
        return self._summary()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self._sample():
                return  # the process is gone

    def _sample(self) -> bool:
        """Record one reading of the process tree; False when the root process has exited."""
        cpu_percent, rss_bytes, alive = 0.0, 0, 0
        for proc in self._tree():
            try:
                with proc.oneshot():
                    cpu_percent += proc.cpu_percent(None)
                    rss_bytes += proc.memory_info().rss
                alive += 1
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                self._procs.pop(proc.pid, None)
        if alive:
            self._cpu.append(cpu_percent)
            self._rss_bytes.append(rss_bytes)
        return self._root.is_running()

    def _tree(self) -> list[psutil.Process]:
        """The root and its children, reusing Process objects so cpu_percent measures since the last sample."""
        found = [self._root]
        if self.include_children:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                found += self._root.children(recursive=True)
        return [self._procs.setdefault(proc.pid, proc) for proc in found]

    def _summary(self) -> ProcessUsage:
        n = len(self._cpu)
        return {
            "cpu_percent_mean": round(sum(self._cpu) / n, 2) if n else 0.0,
            "cpu_percent_max": round(max(self._cpu), 2) if n else 0.0,
            "rss_mb_max": round(max(self._rss_bytes) / _MB, 2) if n else 0.0,
            "samples": n,
        }
