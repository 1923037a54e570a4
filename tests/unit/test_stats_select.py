from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.decide.select import select_best, violations
from workbench.errors import UsageError
from workbench.metrics import higher_is_better
from workbench.recipe.spec import Bound, ObjectiveSpec
from workbench.stats import bootstrap_ci, coefficient_of_variation, latency_summary_ms


def test_latency_summary_is_in_ms_at_us_precision() -> None:
    samples_ns = np.arange(1, 1001) * 1_000  # 1 µs .. 1 ms
    summary = latency_summary_ms(samples_ns)
    assert summary["p50"] == pytest.approx(0.5005, abs=1e-3)
    assert summary["p99"] == pytest.approx(0.990, abs=2e-3)
    assert summary["max"] == 1.0
    assert summary["p999"] is None  # 1000 samples are too few for p99.9


def test_too_few_samples_give_no_p99() -> None:
    assert latency_summary_ms(np.full(50, 1_000_000))["p99"] is None


def test_bootstrap_interval_contains_the_mean_and_narrows_with_data() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.normal(10, 1, 10), rng.normal(10, 1, 1000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_l < 10 < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s)


def test_coefficient_of_variation() -> None:
    assert coefficient_of_variation([10, 10, 10]) == 0
    assert coefficient_of_variation([9, 11]) == pytest.approx(np.std([9, 11], ddof=1) / 10)


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "variant": "a",
                "status": "ok",
                "batch_size": 32,
                "throughput_rps": 100.0,
                "latency_ms_p99": 5.0,
                "accuracy_drop": 0.0,
            },
            {
                "variant": "b",
                "status": "ok",
                "batch_size": 32,
                "throughput_rps": 300.0,
                "latency_ms_p99": 30.0,
                "accuracy_drop": 0.001,
            },
            {
                "variant": "c",
                "status": "ok",
                "batch_size": 32,
                "throughput_rps": 200.0,
                "latency_ms_p99": 9.0,
                "accuracy_drop": 0.002,
            },
            {
                "variant": "c",
                "status": "ok",
                "batch_size": 1,
                "throughput_rps": 900.0,
                "latency_ms_p99": 1.0,
                "accuracy_drop": 0.002,
            },
            {
                "variant": "d",
                "status": "rejected",
                "batch_size": None,
                "throughput_rps": None,
                "latency_ms_p99": None,
                "accuracy_drop": 0.5,
            },
        ]
    )


def test_select_respects_constraints_and_batch() -> None:
    best = select_best(frame(), {"latency_ms.p99": Bound(max=10)}, ObjectiveSpec(maximize="throughput_rps"))
    assert best is not None
    assert (best.variant, best.batch_size, best.value) == ("c", 32, 200.0)


def test_select_minimize() -> None:
    best = select_best(frame(), {}, ObjectiveSpec(maximize=None, minimize="latency_ms.p99", batch_size=32))
    assert best is not None and best.variant == "a"


def test_select_none_feasible() -> None:
    assert select_best(frame(), {"latency_ms_p99": Bound(max=1)}, ObjectiveSpec()) is None


def test_violations_and_directions() -> None:
    row = frame().iloc[1]
    assert violations(row, {"latency_ms.p99": Bound(max=10)}) == ["latency_ms.p99=30 > 10"]
    assert violations(row, {"accuracy_drop": Bound(max=0.01)}) == []
    assert higher_is_better("throughput_rps") and not higher_is_better("latency_ms.p99")
    with pytest.raises(UsageError, match="unknown metric"):
        higher_is_better("speed")


def test_round_order_rotates_so_no_contender_always_goes_first() -> None:
    from workbench.stats import round_order

    assert [round_order(["a", "b"], i) for i in range(4)] == [["a", "b"], ["b", "a"], ["a", "b"], ["b", "a"]]
    firsts = [round_order(["a", "b", "c"], i)[0] for i in range(3)]
    assert sorted(firsts) == ["a", "b", "c"]
    assert all(sorted(round_order(["a", "b", "c"], i)) == ["a", "b", "c"] for i in range(5))


def test_flags_read_the_same_from_text_and_lists() -> None:
    from workbench.metrics import flag_set, is_untrusted

    assert flag_set("generator_saturated,errors") == flag_set(["errors", "generator_saturated"])
    assert flag_set(None) == flag_set("") == frozenset()
    assert is_untrusted("few_requests,generator_behind") and not is_untrusted(["errors", "unsettled"])
