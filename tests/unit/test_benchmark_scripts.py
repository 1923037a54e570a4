"""The issue 17 benchmark scripts run: the GPU check's CPU smoke mode, each script's --help, the GPU summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(command: list[str], timeout_s: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)


@pytest.mark.parametrize("script", ["gpu_check.sh", "gpu_wheels.sh"])
def test_the_shell_scripts_parse(script: str) -> None:
    assert _run(["bash", "-n", str(BENCHMARKS / script)], 30).returncode == 0


@pytest.mark.parametrize("script", ["serving_vs_starlette.py", "minilm_served.py", "gpu_summary.py"])
def test_each_benchmark_answers_help(script: str) -> None:
    done = _run([sys.executable, str(BENCHMARKS / script), "--help"], 60)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_the_starlette_benchmark_offers_a_short_run() -> None:
    done = _run([sys.executable, str(BENCHMARKS / "serving_vs_starlette.py"), "--help"], 60)
    assert all(flag in done.stdout for flag in ("--seconds", "--rounds", "--only", "--load"))


def test_gpu_check_refuses_an_unknown_argument() -> None:
    assert _run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--fast"], 30).returncode == 2


@pytest.mark.slow  # starts harness servers and drives them: ~15-25 s
def test_gpu_check_cpu_smoke_skips_what_needs_cuda_and_exits_0() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}  # CPU only, even on a GPU host
    done = _run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--cpu-smoke"], 120, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout.split("gpu_check summary", 1)[1]
    assert "skipped  gpu-marked tests: no CUDA" in summary
    assert "skipped  digits-gpu torch CUDA paths, served on the GPU: no CUDA" in summary
    assert "ok       digits-gpu recipe with these overrides loads" in summary
    assert "ok       --workers 2 vs 1 (smoke)" in summary
    assert "--workers 2 vs --workers 1, c32: throughput" in done.stdout  # the ratio, with its target
    assert "FAILED" not in summary


def test_gpu_summary_names_a_failed_variant_as_skipped_and_takes_ratios() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    from gpu_summary import summary_lines

    rows = [
        ("torch-eager", "ok", None, "inprocess", 32, 1000.0),
        ("torch-eager", "ok", None, "served", 1, 900.0),
        ("torch-fp16", "ok", None, "inprocess", 32, 2500.0),
        ("ort-fp32", "failed", "needs onnxruntime-gpu", None, None, None),
    ]
    frame = pd.DataFrame(rows, columns=["pipeline", "status", "reason", "mode", "batch_size", "throughput_items_per_s"])
    lines = summary_lines(frame, 32)
    eager, fp16, ort = lines[1:]
    assert eager.split()[1:5] == ["1000.0", "1.00", "900.0", "0.90"]  # served / in-process
    assert fp16.split()[1:3] == ["2500.0", "2.50"]  # x eager
    assert ort.endswith("skipped: needs onnxruntime-gpu")
