"""`workbench select` and `wb.select` on a real digits run: the recipe's own judging, overrides, errors."""

from __future__ import annotations

import pytest
from report_support import run_cli

import workbench as wb
from workbench.errors import NoFeasibleVariant
from workbench.report.rundir import RunDir


def test_python_select_defaults_to_the_recipes_constraints_and_objective(digits_run: RunDir) -> None:
    best = wb.select(digits_run.path)
    summary = digits_run.read_envelope().summary
    assert best.variant == summary["best"] and best.metric == "throughput_items_per_s"
    assert set(best.ranking["variant"]) == {"torch-eager", "ort-fp32"}


def test_python_select_with_cost_as_a_constraint(digits_run: RunDir) -> None:
    best = wb.select(
        digits_run.path, constraints=["cost_per_million<=1000"], objective="min:latency_ms.p50", batch_size=1
    )
    assert best.batch_size == 1 and (best.ranking["cost_per_million"] > 0).all()  # the recipe's price: 0.5/hour


def test_cli_select_prints_the_ranking_and_the_winner(
    digits_run: RunDir, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli(
        monkeypatch, "select", str(digits_run.path), "-c", "accuracy_drop<=0.01", "-o", "throughput_items_per_s",
        "--batch-size", "8", "--mode", "inprocess",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "best:" in out and "at batch 8 among 2 feasible of 2" in out and "ort-fp32" in out


def test_cli_select_shows_an_infeasible_variant_and_why(
    golden: RunDir, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli(monkeypatch, "select", str(golden.path), "-c", "latency_ms.p99<=5", "--price-per-hour", "0.34")
    out = capsys.readouterr().out
    assert code == 0 and "best: ort-fp32" in out and "over served load steps among 1 feasible of 2" in out
    assert "latency_ms_p99=" in out and "cost_per_million" in out  # torch-eager's violation; the price's column


def test_cli_select_with_nothing_feasible_names_the_binding_constraint(
    digits_run: RunDir, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli(monkeypatch, "select", str(digits_run.path), "-c", "latency_ms.p50<=0.00001", "--mode", "inprocess")
    err = capsys.readouterr().err
    assert code == 1
    assert "error: no variant meets every constraint: latency_ms_p50 ≤ 1e-05 rules out 2 of 2" in err
    assert "nearest miss:" in err and "outside ≤ 1e-05" in err
    with pytest.raises(NoFeasibleVariant):
        wb.select(digits_run.path, constraints=["latency_ms.p50<=0.00001"], mode="inprocess")


def test_cli_select_rejects_a_malformed_constraint(
    digits_run: RunDir, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(monkeypatch, "select", str(digits_run.path), "-c", "p99 < 20") == 2
    assert "is not METRIC<=NUMBER or METRIC>=NUMBER" in capsys.readouterr().err
