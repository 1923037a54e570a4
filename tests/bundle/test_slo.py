"""A bundle's SLOs from a variant's measurements: served figures first, the budget's source named."""

from __future__ import annotations

from typing import Any

import pytest

from workbench.bundle.slo import SERVED_HEADROOM, derive_slo
from workbench.errors import UsageError
from workbench.recipe.spec import Bound
from workbench.report.schema import Measurement, VariantRecord


def _measurement(mode: str, step: str, rps: float, p50: float, p99: float | None, **extra: Any) -> Measurement:
    return Measurement(
        mode=mode,  # type: ignore[arg-type]
        case=step,
        batch_size=extra.pop("batch_size", 1),
        iterations=1000,
        trials=3,
        latency_ms={"p50": p50, "p99": p99, "max": (p99 or p50) * 2},
        throughput_rps=rps,
        throughput_items_per_s=rps,
        **extra,
    )


def _record(*measurements: Measurement) -> VariantRecord:
    return VariantRecord(
        variant="v", pipeline="v", is_baseline=False, steps=[], serving={}, serving_label="ort t1",
        runtime="onnxruntime", status="ok", measurements=list(measurements),
    )  # fmt: skip


SERVED = (
    _measurement("inprocess", "b1", 3000.0, 0.1, 0.4),
    _measurement("served", "c1", 400.0, 0.6, 9.0, concurrency=1, error_rate=0.0),
    _measurement("served", "c4", 750.0, 2.8, 15.0, concurrency=4, error_rate=0.0),
)


def test_served_figures_win_and_the_heaviest_step_is_the_tested_load() -> None:
    slo = derive_slo(_record(*SERVED))
    assert slo["source"] == "served"
    assert (slo["latency_ms_p50"], slo["latency_ms_p99"]) == (2.8, 15.0)
    assert "4 users" in slo["load"]
    assert slo["latency_budget_ms_p99"] == pytest.approx(15.0 * SERVED_HEADROOM)
    assert slo["max_throughput_rps_under_sla"] == 750.0
    assert "lower bound" in slo["max_throughput_basis"]


def test_a_step_over_the_budget_does_not_count_as_under_the_sla() -> None:
    slo = derive_slo(_record(*SERVED), constraints={"latency_ms_p99": Bound(max=10.0)})
    assert slo["latency_budget_ms_p99"] == 10.0
    assert slo["budget_basis"] == "the recipe's latency_ms_p99 constraint"
    assert slo["max_throughput_rps_under_sla"] == 400.0  # c4's p99 of 15 ms breaks the 10 ms budget


def test_an_sla_search_gives_the_rate_and_the_budget() -> None:
    sla = {"rate_rps": 612.5, "latency_ms_max": 20.0, "percentile": "p99"}
    slo = derive_slo(_record(*SERVED), sla=sla)
    assert (slo["max_throughput_rps_under_sla"], slo["latency_budget_ms_p99"]) == (612.5, 20.0)
    assert slo["max_throughput_basis"].startswith("SLA search")


def test_an_explicit_budget_beats_everything() -> None:
    slo = derive_slo(_record(*SERVED), sla={"latency_ms_max": 20.0, "percentile": "p99"}, p99_budget_ms=12.0)
    assert (slo["latency_budget_ms_p99"], slo["budget_basis"]) == (12.0, "asked for at export")


def test_in_process_figures_add_an_http_allowance_and_say_so() -> None:
    slo = derive_slo(_record(SERVED[0], _measurement("inprocess", "b8", 900.0, 0.8, 2.0, batch_size=8)))
    assert slo["source"] == "inprocess"
    assert slo["latency_ms_p99"] == 0.4  # the smallest batch
    assert slo["latency_budget_ms_p99"] > 0.4 * 2
    assert "HTTP" in slo["budget_basis"] and slo["max_throughput_rps_under_sla"] is None


def test_a_variant_without_measurements_has_no_slo() -> None:
    with pytest.raises(UsageError, match="no measurements"):
        derive_slo(_record())
