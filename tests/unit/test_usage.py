"""The process sampler on real child processes: what it counts, driven by events, never by sleeps or CPU share."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from workbench.measure.usage import ProcessSampler

INTERVAL_S = 0.02
MIN_SAMPLES = 5
BALLAST_MB = 64
DEADLINE_S = 60.0  # generous: only a hung sampler gets near it, and the test then fails instead of hanging

# A child that holds `mb` megabytes resident, says "ready", then burns CPU ("burn") or idles ("hold") until its stdin
# reaches end of file. The ballast is written byte by byte (b"\x01" * n), so its pages are resident; a zeroed
# bytearray would be calloc'd and might never be touched.
CHILD = """
import sys, threading
mb, mode = int(sys.argv[1]), sys.argv[2]
ballast = b"\\x01" * (mb * 1024 * 1024)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
print("ready", flush=True)
if mode == "burn":
    while not done.is_set():
        pass
else:
    done.wait()
"""
# A parent that does nothing but run CHILD (which inherits its stdin and stdout) and wait for it.
PARENT = "import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-c', *sys.argv[1:]]))"


def _spawn(*argv: str) -> subprocess.Popen[str]:
    """Start a Python process and wait for its CHILD to print "ready"."""
    proc = subprocess.Popen([sys.executable, "-c", *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _finish(proc: subprocess.Popen[str]) -> None:
    """Tell the process tree to exit (end of file on stdin) and reap it."""
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def burning() -> Iterator[subprocess.Popen[str]]:
    proc = _spawn(CHILD, "1", "burn")
    yield proc
    _finish(proc)


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll until `condition` holds; fail (not hang) when it has not after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(INTERVAL_S)


def _sample(sampler: ProcessSampler, min_samples: int = MIN_SAMPLES) -> None:
    sampler.start()
    _wait_until(lambda: sampler.samples_taken >= min_samples, f"{min_samples} samples")


def test_sampler_sees_a_busy_process(burning: subprocess.Popen[str]) -> None:
    sampler = ProcessSampler(burning.pid, interval_s=INTERVAL_S)
    _sample(sampler)
    usage = sampler.stop()
    assert usage["samples"] >= MIN_SAMPLES
    assert usage["cpu_percent_max"] >= usage["cpu_percent_mean"] > 0
    assert usage["rss_mb_max"] > 1


def test_sampler_sees_the_memory_a_process_holds() -> None:
    proc = _spawn(CHILD, str(BALLAST_MB), "hold")
    try:
        sampler = ProcessSampler(proc.pid, interval_s=INTERVAL_S)
        _sample(sampler)
        usage = sampler.stop()
    finally:
        _finish(proc)
    assert usage["samples"] >= MIN_SAMPLES
    assert usage["rss_mb_max"] >= BALLAST_MB


def test_sampler_counts_children_only_when_asked() -> None:
    # The parent is a bare interpreter far smaller than the ballast; only its child holds BALLAST_MB.
    proc = _spawn(PARENT, CHILD, str(BALLAST_MB), "hold")
    try:
        with_children = ProcessSampler(proc.pid, interval_s=INTERVAL_S, include_children=True)
        root_only = ProcessSampler(proc.pid, interval_s=INTERVAL_S, include_children=False)
        _sample(with_children)
        _sample(root_only)
        tree, root = with_children.stop(), root_only.stop()
    finally:
        _finish(proc)
    assert tree["rss_mb_max"] >= BALLAST_MB
    assert root["rss_mb_max"] < BALLAST_MB
    assert tree["rss_mb_max"] > root["rss_mb_max"]


def test_sampler_stops_by_itself_when_the_process_exits() -> None:
    proc = _spawn(CHILD, "1", "hold")
    sampler = ProcessSampler(proc.pid, interval_s=INTERVAL_S)
    _sample(sampler)
    _finish(proc)  # reaped: the pid is gone, not a zombie
    _wait_until(lambda: not sampler.sampling, "the sampling thread to end")
    taken = sampler.samples_taken
    usage = sampler.stop()  # no error: a process that ends while measured is normal
    assert set(usage) == {"cpu_percent_mean", "cpu_percent_max", "rss_mb_max", "samples"}
    assert usage["samples"] == taken >= MIN_SAMPLES  # readings before the exit are kept; none is taken after it
    assert usage["rss_mb_max"] > 0


def test_sampler_of_a_process_that_is_already_gone_raises() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    with pytest.raises(psutil.NoSuchProcess):
        ProcessSampler(proc.pid).start()


def test_sampler_rejects_bad_use(burning: subprocess.Popen[str]) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        ProcessSampler(os.getpid(), interval_s=0.0)
    with pytest.raises(ValueError, match="interval_s"):
        ProcessSampler(os.getpid(), interval_s=60.0)
    with pytest.raises(RuntimeError, match="not started"):
        ProcessSampler(os.getpid()).stop()
    sampler = ProcessSampler(burning.pid, interval_s=INTERVAL_S)
    sampler.start()
    with pytest.raises(RuntimeError, match="already started"):
        sampler.start()
    assert sampler.stop()["samples"] >= 1  # stop() takes a last reading when the thread took none
