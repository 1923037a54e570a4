"""Interleaved A/B on real served variants: two ONNX files served by the real harness, Locust load,
rounds in ABBA order, paired statistics."""

from __future__ import annotations

from pathlib import Path

import pytest
from gate_support import workbench

from workbench.gate.interleave import bundle_contender, interleave_rounds

# Short steps: each round costs a few seconds per side, most of it Locust starting.
PROFILE = """kind: concurrency
users: [1]
warmup_s: 0.3
window_s: 0.4
min_windows: 2
max_windows: 3
min_requests: 50
tolerance: 0.5
latency_tolerance: 1.0
"""


def test_rounds_alternate_in_abba_order() -> None:
    calls: list[tuple[str, int]] = []

    def measure(label: str, index: int) -> dict[str, dict[str, float | None]]:
        calls.append((label, index))
        return {"c1": {"throughput_rps": 100.0 + index, "latency_ms_p99": None}}

    collected = interleave_rounds(measure, ["a", "b"], rounds=4)

    assert calls == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2), ("b", 3), ("a", 3)]
    assert collected["a"]["c1"]["throughput_rps"] == [100.0, 101.0, 102.0, 103.0]
    assert collected["b"]["c1"]["latency_ms_p99"] == [None] * 4


@pytest.mark.slow
def test_interleaved_ab_on_served_models_finds_the_slow_candidate(
    tmp_path: Path,
    fast_model: Path,
    slow_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    profile = tmp_path / "short.yaml"
    profile.write_text(PROFILE)
    summary = tmp_path / "gate.md"

    code = workbench(
        "gate", "--interleave", "--baseline-model", fast_model, "--candidate-model", slow_model,
        "--rounds", "3", "--min-trials", "3", "--method", "bootstrap", "--profile", profile,
        "--fail", "latency_ms.p50:+20%", "--fail", "throughput_rps:-10%", "--summary", summary,
        monkeypatch=monkeypatch,
    )  # fmt: skip

    out = capsys.readouterr().out
    assert code == 1
    assert "gate · interleaved A/B (paired rounds)" in out
    # The slow model costs about 2x per request end to end; p50 is caught in every round we have seen,
    # throughput too unless one round of three is disturbed (then that rule is inconclusive, not a pass).
    p50 = next(line for line in out.splitlines() if "latency_ms.p50:+20%" in line)
    assert p50.startswith("REGRESSION") and "3 vs 3" in p50
    assert not any(line.startswith("ok ") for line in out.splitlines())
    assert "paired bootstrap + Wilcoxon" in out
    assert "paired bootstrap 95% CI of the median per-round ratio" in summary.read_text()


def test_interleave_needs_a_pair_of_bundles_or_models(
    tmp_path: Path, fast_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = workbench("gate", "--interleave", "--baseline-model", fast_model, "--fail", "latency_ms.p50:+5%",
                     monkeypatch=monkeypatch)  # fmt: skip

    assert code == 2
    assert "--interleave needs --baseline-bundle and --candidate-bundle" in capsys.readouterr().err


def test_a_directory_that_is_not_a_bundle_is_refused(tmp_path: Path, fast_model: Path) -> None:
    from workbench.errors import UsageError

    folder = tmp_path / "not-a-bundle"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(fast_model.read_bytes())

    with pytest.raises(UsageError, match=r"--baseline-bundle .*not-a-bundle"):
        bundle_contender("baseline", folder)
