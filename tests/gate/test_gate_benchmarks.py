"""The gate's and the history's benchmarks still run: their figures go in the README and the closing notes, so a script that
broke silently would leave those figures unreproducible. Tiny runs only: behaviour, not the figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(script: str, *args: str, timeout_s: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=BENCHMARKS,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize(
    "script", ["gate_false_alarm.py", "gate_power.py", "gate_served.py", "history_changepoints.py"]
)
def test_each_gate_benchmark_explains_itself(script: str) -> None:
    assert "Wilson" in _run(script, "--help")


def test_in_process_false_alarms_print_a_rate_with_its_interval_per_arm() -> None:
    out = _run("gate_false_alarm.py", "--decisions", "2", "--rounds", "5", "--trial-s", "0.02")

    for arm in ("interleaved", "sequential"):
        assert f"A/A false alarms ({arm}): " in out
        assert "/2 = " in out.split(f"({arm}): ")[1].splitlines()[0]
    assert "error control: Holm over 3 checks" in out


@pytest.mark.slow
def test_served_false_alarms_gate_a_real_bundle_both_ways() -> None:
    out = _run("gate_served.py", "--decisions", "1", "--rounds", "5", "--windows", "1", "--window-s", "0.3")

    for arm in ("interleaved", "sequential"):
        line = out.split(f"A/A served false alarms ({arm}): ")[1].splitlines()[0]
        assert line.split(" = ")[0] in {"0/1", "1/1"}
        assert "Wilson 95% [" in line
    assert "5 trials of 0.3 s per side" in out


def test_history_change_points_are_counted_on_this_machines_real_spread() -> None:
    out = _run("history_changepoints.py", "--runs", "10", "--series", "5", "--length", "8",
               "--trials", "2", "--trial-s", "0.02")  # fmt: skip

    assert "real run-to-run spread" in out
    for kind in ("false change points, flat resampled: ", "creep of five +3% steps found: "):
        assert out.count(kind) == 2  # throughput and p50
    assert "false change points, flat in run order: " in out and "/3 = " in out
