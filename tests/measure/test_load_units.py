"""The load engine's pure parts: profiles, arrival schedules, windows, the SLA bisection, /metrics diffs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from workbench.errors import NotFoundError, RecipeError
from workbench.measure.load.sla import Probe, search_rate
from workbench.measure.load.windows import cut_windows, settled, summarize
from workbench.measure.load.wire import FLAG_WAITED_FOR_SLOT, RECORD_DTYPE, Kind, arrival_offsets_ns
from workbench.measure.server_metrics import _histograms, breakdown
from workbench.recipe.profiles import (
    ConcurrencyProfile,
    PoissonProfile,
    RampProfile,
    SlaSearchProfile,
    load_profile,
    plan_steps,
)

ROOT = Path(__file__).parents[2]
MS = 1_000_000
S = 1_000_000_000


# ----------------------------------------------------------------------------------------------- profiles


@pytest.mark.parametrize("path", sorted((ROOT / "recipes" / "profiles").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_profile_loads(path: Path) -> None:
    profile = load_profile(path)
    assert profile.kind in {"concurrency", "constant", "poisson", "ramp", "sla_search"}


def test_profile_by_bare_name_and_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert isinstance(load_profile("sla"), SlaSearchProfile)
    assert load_profile({"kind": "concurrency", "users": [2, 8]}) == ConcurrencyProfile(users=(2, 8))


def test_bad_profiles_say_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    with pytest.raises(RecipeError, match="latency_ms_max"):
        load_profile({"kind": "sla_search"})
    with pytest.raises(RecipeError, match="max_windows"):
        load_profile({"kind": "concurrency", "min_windows": 5, "max_windows": 3})
    with pytest.raises(NotFoundError, match="concurrency"):
        load_profile("no-such-profile")


def test_steps_are_planned_from_the_profile() -> None:
    closed = plan_steps(ConcurrencyProfile(users=(1, 4)))
    assert [(s.loop, s.users) for s in closed] == [("closed", 1), ("closed", 4)]
    opened = plan_steps(PoissonProfile(rates_rps=(50.0,)))
    assert [(s.loop, s.rate_rps, s.arrival) for s in opened] == [("open", 50.0, "poisson")]
    (ramp,) = plan_steps(RampProfile(start_rps=10, end_rps=30, segments=4))
    assert ramp.is_ramp and ramp.segments == 4


# ---------------------------------------------------------------------------------------------- arrivals


def _offsets_s(**kwargs: object) -> np.ndarray:
    return np.array(list(arrival_offsets_ns(**kwargs)), dtype=np.float64) / 1e9  # type: ignore[arg-type]


def test_constant_arrivals_are_evenly_spaced() -> None:
    times = _offsets_s(rate_rps=100.0, arrival="constant", duration_s=10.0)
    assert abs(len(times) - 1000) <= 1
    assert np.allclose(np.diff(times), 0.01, atol=1e-6)


def test_poisson_arrivals_have_the_mean_rate_and_exponential_gaps() -> None:
    times = _offsets_s(rate_rps=200.0, arrival="poisson", duration_s=50.0, seed=3)
    assert abs(len(times) - 10_000) < 5 * np.sqrt(10_000)
    gaps = np.diff(times)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.05)  # exponential: CV 1


def test_a_ramp_holds_then_climbs_linearly() -> None:
    times = _offsets_s(rate_rps=50.0, end_rps=150.0, hold_s=1.0, ramp_s=4.0, arrival="constant", duration_s=5.0)
    counts = [int(((times >= a) & (times < b)).sum()) for a, b in [(0, 1), (1, 3), (3, 5)]]
    assert counts == pytest.approx([50, 150, 250], abs=2)  # ∫ rate over each span


# ----------------------------------------------------------------------------------------------- windows


def _records(latencies_ms: list[float], every_ms: float, kinds: Sequence[int] | None = None) -> np.ndarray:
    records = np.zeros(len(latencies_ms), dtype=RECORD_DTYPE)
    records["intended"] = (np.arange(len(latencies_ms)) * every_ms * MS).astype(np.int64)
    records["start"] = records["intended"]
    records["end"] = records["intended"] + (np.array(latencies_ms) * MS).astype(np.int64)
    records["kind"] = kinds if kinds is not None else Kind.OK
    return records


def test_steady_windows_settle_and_pool_into_figures() -> None:
    records = _records([2.0] * 3000, every_ms=1.0)  # 1000 rps, 2 ms each, for 3 s
    windows = cut_windows(records, 0, S, 3 * S)
    assert [w.ok for w in windows] == [998, 1000, 1000]  # by completion instant
    assert settled(windows, 3, tolerance=0.1, latency_tolerance=0.1)
    figures = summarize(records, windows)
    assert figures.latency_ms["p99"] == pytest.approx(2.0)
    assert figures.throughput_rps == pytest.approx(999.3, abs=1)
    assert figures.errors == {} and figures.error_rate == 0


def test_a_drifting_latency_does_not_settle() -> None:
    latencies = list(np.linspace(1.0, 20.0, 3000))  # the server falls behind
    windows = cut_windows(_records(latencies, every_ms=1.0), 0, S, 3 * S)
    assert not settled(windows, 3, tolerance=0.1, latency_tolerance=0.25)


def test_small_windows_compare_the_percentile_they_can_carry() -> None:
    windows = cut_windows(_records([3.0] * 300, every_ms=10.0), 0, S, 3 * S)  # 100 per window: no p99
    assert {w.percentile for w in windows} == {"p95"}
    figures = summarize(_records([3.0] * 300, every_ms=10.0), windows)
    assert figures.latency_ms["p999"] is None  # never a percentile from too few requests


def test_a_served_step_keeps_per_window_samples_for_the_gate() -> None:
    latencies = [2.0] * 1000 + [4.0] * 1000 + [6.0] * 1000  # one latency per window
    records = _records(latencies, every_ms=1.0)

    figures = summarize(records, cut_windows(records, 0, S, 3 * S))

    assert figures.samples["throughput_rps"] == pytest.approx([1000.0] * 3, abs=3)
    assert figures.samples["latency_ms_p50"] == pytest.approx([2.0, 4.0, 6.0])
    assert figures.samples["latency_ms_p99"] == pytest.approx([2.0, 4.0, 6.0])
    assert figures.latency_ms_p50_std == pytest.approx(2.0)
    small = _records([3.0] * 300, every_ms=10.0)  # 100 per window: p50 and p90 per window, no p99
    assert set(summarize(small, cut_windows(small, 0, S, 3 * S)).samples) == {
        "throughput_rps",
        "latency_ms_p50",
        "latency_ms_p90",
    }
    assert summarize(records, cut_windows(records, 0, S, S)).samples == {}  # one window: nothing to compare


def test_errors_are_counted_by_kind_and_late_sends_detected() -> None:
    kinds = [Kind.OK] * 90 + [Kind.HTTP_503] * 6 + [Kind.TIMEOUT] * 4
    records = _records([1.0] * 100, every_ms=10.0, kinds=kinds)
    records["start"][:50] += 20 * MS  # sent 20 ms late with a slot free: the generator was behind
    figures = summarize(records, cut_windows(records, 0, S, 2 * S))
    assert figures.errors == {"http_503": 6, "timeout": 4}
    assert figures.error_rate == pytest.approx(0.1)
    assert figures.generator_behind
    records["flags"][:50] = FLAG_WAITED_FOR_SLOT  # ...unless every slot was taken: the server was behind
    assert not summarize(records, cut_windows(records, 0, S, 2 * S)).generator_behind


# --------------------------------------------------------------------------------------------- SLA search


def test_sla_bisection_converges_on_a_known_capacity() -> None:
    profile = SlaSearchProfile(latency_ms_max=10, precision=0.02, max_probes=20)
    outcome = search_rate(profile, lambda rate: Probe(rate, passed=rate <= 137.0), 10.0, 400.0)
    assert outcome.converged
    assert outcome.rate_rps is not None and 137.0 / 1.02 <= outcome.rate_rps <= 137.0
    assert outcome.probes[0].rate_rps == 10.0  # the low end is verified first


def test_sla_search_reports_none_when_even_the_lowest_rate_fails() -> None:
    profile = SlaSearchProfile(latency_ms_max=10)
    outcome = search_rate(profile, lambda rate: Probe(rate, passed=False, why="p99 too high"), 10.0, 400.0)
    assert outcome.rate_rps is None and len(outcome.probes) == 1


def test_sla_search_stops_after_max_probes() -> None:
    profile = SlaSearchProfile(latency_ms_max=10, precision=1e-6, max_probes=4)
    outcome = search_rate(profile, lambda rate: Probe(rate, passed=rate < 100), 10.0, 400.0)
    assert len(outcome.probes) == 4 and not outcome.converged


# --------------------------------------------------------------------------------------- server /metrics

_METRICS = """
# TYPE sh_queue_duration_seconds histogram
sh_queue_duration_seconds_bucket{{model="m",le="0.001"}} {q1}
sh_queue_duration_seconds_bucket{{model="m",le="+Inf"}} {qn}
sh_queue_duration_seconds_count{{model="m"}} {qn}
sh_queue_duration_seconds_sum{{model="m"}} {qs}
# TYPE sh_batch_size histogram
sh_batch_size_bucket{{model="m",le="1.0"}} {b1}
sh_batch_size_bucket{{model="m",le="4.0"}} {bn}
sh_batch_size_bucket{{model="m",le="+Inf"}} {bn}
sh_batch_size_count{{model="m"}} {bn}
sh_batch_size_sum{{model="m"}} {bs}
"""


def test_server_breakdown_is_the_difference_between_two_scrapes() -> None:
    before = _histograms(_METRICS.format(q1=5, qn=10, qs=0.01, b1=10, bn=10, bs=10), "m")
    after = _histograms(_METRICS.format(q1=5, qn=30, qs=0.05, b1=12, bn=20, bs=40), "m")
    result = breakdown(before, after)
    assert result["queue_ms_mean"] == pytest.approx(2.0)  # 40 ms over 20 requests
    assert result["batch_size_mean"] == pytest.approx(3.0)
    assert result["batch_size_distribution"] == {"<=1": 2.0, "<=4": 8.0}
