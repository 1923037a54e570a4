"""``workbench gate --history``: a creep of small steps, each within the pairwise threshold, fails once
the candidate is placed on its timeline; a flat timeline passes. Real runs in the real report store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gate_support import workbench, write_run

P99 = [2.0, 2.02, 1.98, 2.01, 1.99]
RULES = ["--fail", "latency_ms.p99:+10%", "--fail", "throughput_rps:-5%"]
FLAT = [1.0] * 13
CREEP = [1.0] * 8 + [1.03**step for step in range(1, 6)]  # five merges, each 3% slower


def timeline(reports: Path, levels: list[float], fingerprint: dict[str, Any], *, seed: int = 0) -> list[Path]:
    """One run per commit whose p99 sits at ``levels`` (relative), with 1% run-to-run noise."""
    rng = np.random.default_rng(seed)
    runs = []
    for index, level in enumerate(levels):
        scale = level * (1 + 0.01 * rng.standard_normal())
        env = {**fingerprint, "git": {"commit": f"{index:02d}" * 20}}
        runs.append(write_run(reports, latency_ms_p99=[v * scale for v in P99], env=env, results=True))
    return runs


def gate(*args: str | Path, monkeypatch: pytest.MonkeyPatch) -> int:
    return workbench("gate", *RULES, *args, monkeypatch=monkeypatch)


def test_a_creep_within_the_pairwise_threshold_fails_with_history(
    tmp_path: Path, fingerprint: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = timeline(tmp_path, CREEP, fingerprint)
    pair = ("--baseline", runs[-2], "--candidate", runs[-1], "--reports", tmp_path)
    summary = tmp_path / "gate.md"

    pairwise = gate(*pair, monkeypatch=monkeypatch)
    pairwise_out = capsys.readouterr().out
    with_history = gate(*pair, "--history", tmp_path, "--summary", summary, monkeypatch=monkeypatch)
    out = capsys.readouterr().out

    assert pairwise == 0 and "PASS: 0 regression(s), 2 within budget" in pairwise_out
    assert with_history == 1
    assert "FAIL: 1 regression(s), 2 within budget" in out
    assert "history: change point +" in out and "worse (" in out and "the candidate still sits behind it" in out
    assert "history: 2 series of tiny on this machine, up to 13 runs" in out
    assert "| ❌ | ort-fp32 · b1 | latency_ms.p99:+10% | – | – | – | – | history: change point +" in summary.read_text()


def test_a_flat_timeline_passes_with_history(
    tmp_path: Path, fingerprint: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = timeline(tmp_path, FLAT, fingerprint, seed=1)

    code = gate("--baseline", runs[-2], "--candidate", runs[-1], "--reports", tmp_path, "--history", tmp_path,
                monkeypatch=monkeypatch)  # fmt: skip

    out = capsys.readouterr().out
    assert code == 0
    assert "among the newest 8 runs: 0" in out


def test_history_kept_apart_from_the_candidates_folder(
    tmp_path: Path, fingerprint: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CI job measures into a fresh folder and keeps the history elsewhere: the candidate joins it."""
    kept, fresh = tmp_path / "history", tmp_path / "ci"
    runs = timeline(kept, CREEP[:-1], fingerprint)
    candidate = timeline(fresh, CREEP[-1:], fingerprint, seed=5)[0]

    code = gate("--baseline", runs[-1], "--candidate", candidate, "--reports", fresh, "--history", kept,
                monkeypatch=monkeypatch)  # fmt: skip

    assert code == 1
    assert "up to 13 runs to the candidate" in capsys.readouterr().out


def test_history_needs_two_runs_and_a_folder(
    tmp_path: Path, fingerprint: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path, env=fingerprint, results=True)

    missing = gate("--baseline", run, "--candidate", run, "--history", tmp_path / "nowhere", monkeypatch=monkeypatch)
    interleaved = gate("--interleave", "--history", tmp_path, monkeypatch=monkeypatch)

    err = capsys.readouterr().err
    assert (missing, interleaved) == (2, 2)
    assert "not a folder of runs" in err
