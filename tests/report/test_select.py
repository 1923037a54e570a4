"""Selection under constraints: directions, objectives, served steps, ties, the Pareto front, infeasibility."""

from __future__ import annotations

import pandas as pd
import pytest
from report_support import frame, row, served

from workbench.decide.select import Objective, pareto_front, parse_constraints, rank, select, select_best
from workbench.errors import NoFeasibleVariant, UsageError
from workbench.recipe.spec import Bound, ObjectiveSpec


def served_run() -> pd.DataFrame:
    """Three variants under closed-loop load: 'fast' tops out early, 'wide' goes further but its p99 grows."""
    return frame(
        served("fast", 1, 900, 4.0),
        served("fast", 4, 1500, 12.0),
        served("fast", 8, 1600, 30.0),
        served("wide", 1, 700, 5.0),
        served("wide", 4, 1400, 9.0),
        served("wide", 8, 2600, 19.0),
        served("lossy", 8, 5000, 8.0, accuracy=0.90, accuracy_drop=0.08),
        row("fast", batch_size=8, case="b8", throughput_rps=400.0, throughput_items_per_s=3200.0),
    )


def test_constraints_parse_with_units_and_ranges() -> None:
    bounds = parse_constraints(["latency_ms.p99<=20", "accuracy>=0.9", "accuracy<=1"])
    assert bounds == {"latency_ms_p99": Bound(max=20), "accuracy": Bound(min=0.9, max=1)}


@pytest.mark.parametrize(
    ("text", "message"),
    [("latency_ms.p99 < 20", "is not METRIC<=NUMBER"), ("speed<=3", "unknown metric 'speed'"), ("p99<=x", "is not")],
)
def test_bad_constraints_say_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_constraints([text])


def test_served_figure_is_the_best_step_under_the_latency_bound() -> None:
    best = select(
        served_run(),
        parse_constraints(["latency_ms.p99<=20", "accuracy_drop<=0.01"]),
        Objective.parse(["throughput_rps"]),
    )
    assert (best.variant, best.case, best.value, best.mode) == ("wide", "c8", 2600, "served")
    figures = best.ranking.set_index("variant")
    assert figures.loc["fast", "case"] == "c4"  # its c8 step broke the bound; c4 is its best feasible step
    assert not figures.loc["lossy", "feasible"] and "accuracy_drop" in str(figures.loc["lossy", "violations"])
    assert "over served load steps among 2 feasible of 3" in best.reason


def test_untrusted_steps_are_left_out() -> None:
    data = served_run()
    data.loc[(data["variant"] == "wide") & (data["case"] == "c8"), "flags"] = "generator_saturated"
    best = select(
        data, parse_constraints(["latency_ms.p99<=20", "accuracy_drop<=0.01"]), Objective.parse(["throughput_rps"])
    )
    assert (best.variant, best.case) == ("fast", "c4")
    assert "1 untrusted step(s) left out" in best.reason


def test_inprocess_mode_ranks_at_the_objective_batch_and_falls_back() -> None:
    data = frame(
        row("a", batch_size=1, case="b1", throughput_items_per_s=100.0),
        row("a", batch_size=8, case="b8", throughput_items_per_s=300.0),
        row("b", batch_size=1, case="b1", throughput_items_per_s=150.0),
        row("b", batch_size=8, case="b8", throughput_items_per_s=250.0),
    )
    at_one = select(data, {}, Objective.parse(["throughput_items_per_s"], batch_size=1))
    assert (at_one.variant, at_one.batch_size) == ("b", 1)
    fallback = select_best(data, {}, ObjectiveSpec(maximize="throughput_items_per_s", batch_size=32))
    assert fallback is not None and (fallback.variant, fallback.batch_size) == ("a", 8)
    assert "objective batch 32 was not measured, ranked at 8 instead" in fallback.reason


def test_explicit_mode_picks_inprocess_rows_of_a_served_run() -> None:
    best = select(served_run(), {}, Objective.parse(["throughput_items_per_s"]), mode="inprocess")
    assert (best.variant, best.mode, best.batch_size) == ("fast", "inprocess", 8)


def test_lexicographic_ties_break_on_the_next_term_then_the_name() -> None:
    data = frame(
        row("b", throughput_rps=100.0, latency_ms_p50=2.0),
        row("a", throughput_rps=100.0, latency_ms_p50=2.0),
        row("c", throughput_rps=100.0, latency_ms_p50=1.0),
    )
    assert select(data, {}, Objective.parse(["throughput_rps", "latency_ms_p50"])).variant == "c"
    tied = select(data.iloc[:2], {}, Objective.parse(["throughput_rps"]))
    assert tied.variant == "a" and "tied with b" in tied.reason
    assert list(tied.ranking["rank"]) == [1, 2]


def test_weighted_objective_trades_metrics_off() -> None:
    data = frame(
        row("quick", throughput_rps=1000.0, accuracy=0.90),
        row("exact", throughput_rps=600.0, accuracy=0.99),
    )
    throughput_heavy = select(data, {}, Objective.parse(["0.9*throughput_rps", "0.1*accuracy"]))
    accuracy_heavy = select(data, {}, Objective.parse(["0.2*throughput_rps", "0.8*accuracy"]))
    assert (throughput_heavy.variant, accuracy_heavy.variant) == ("quick", "exact")
    assert throughput_heavy.ranking["score"].tolist() == pytest.approx([0.9, 0.1])
    assert Objective.parse(["0.9*throughput_rps", "0.1*accuracy"]).kind == "weighted"


def test_explicit_direction_overrides_the_table() -> None:
    data = frame(row("small", artifact_mb=1.0), row("big", artifact_mb=5.0))
    assert select(data, {}, Objective.parse(["artifact_mb"])).variant == "small"
    assert select(data, {}, Objective.parse(["max:artifact_mb"])).variant == "big"


def test_all_infeasible_names_the_binding_constraint_and_the_nearest_miss() -> None:
    constraints = parse_constraints(["latency_ms.p99<=3", "accuracy_drop<=0.01"])
    with pytest.raises(NoFeasibleVariant) as caught:
        select(served_run(), constraints, Objective.parse(["throughput_rps"]))
    message = str(caught.value)
    assert message.startswith("no variant meets every constraint: latency_ms_p99 ≤ 3 rules out 3 of 3")
    assert "nearest miss: fast at case c1 with latency_ms_p99=4 (33.3% outside ≤ 3)" in message
    assert select_best(served_run(), constraints, Objective.parse(["throughput_rps"])) is None


def test_nothing_measured_says_so_and_counts_the_gated() -> None:
    data = frame(
        row("x", status="rejected", reason="accuracy_drop 0.2 > 0.01", mode=None, case=None, batch_size=None),
        row("y", status="failed", reason="boom", mode=None, case=None, batch_size=None),
    )
    with pytest.raises(NoFeasibleVariant, match=r"no variant was measured in inprocess mode \(1 rejected and 1 failed"):
        select(data, {}, Objective.parse(["throughput_rps"]))


def test_an_objective_the_rows_do_not_carry_is_named() -> None:
    data = frame(row("a", batch_size=32, case="b32", latency_ms_p99=None, throughput_rps=10.0))
    with pytest.raises(NoFeasibleVariant, match="no measured variant has latency_ms_p99 in inprocess mode at batch 32"):
        select(data, {}, Objective.parse(["latency_ms.p99"]))


def test_a_constraint_on_an_unmeasured_metric_binds() -> None:
    data = frame(row("a", throughput_rps=10.0))
    with pytest.raises(NoFeasibleVariant, match=r"error_rate ≤ 0.01 rules out 1 of 1.*error_rate not measured"):
        select(data, parse_constraints(["error_rate<=0.01"]), Objective.parse(["throughput_rps"]))


def test_pareto_front_keeps_the_undominated_and_ties() -> None:
    points = frame(
        row("a", accuracy=0.99, latency_ms_p99=10.0),
        row("b", accuracy=0.95, latency_ms_p99=4.0),
        row("c", accuracy=0.94, latency_ms_p99=8.0),  # dominated by b
        row("d", accuracy=0.95, latency_ms_p99=4.0),  # equal to b: both stay
        row("e", accuracy=None, latency_ms_p99=1.0),  # not measured: not on the front
    )
    front = pareto_front(points, ["accuracy", "latency_ms.p99"])
    assert sorted(front["variant"]) == ["a", "b", "d"]


def test_pareto_front_of_nothing_is_empty() -> None:
    assert pareto_front(frame(), ["accuracy", "latency_ms_p99"]).empty
    assert pareto_front(frame(row("a", accuracy=0.9)), ["accuracy", "latency_ms_p99"]).empty


def test_rank_lists_every_variant_best_first() -> None:
    ranking = rank(served_run(), parse_constraints(["latency_ms.p99<=20"]), ObjectiveSpec(maximize="throughput_rps"))
    assert list(ranking["variant"]) == ["lossy", "wide", "fast"]
    assert list(ranking["rank"]) == [1, 2, 3]
