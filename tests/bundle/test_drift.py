"""Drift: PSI of a sliding window of requests against a baseline taken from the recipe's data."""

from __future__ import annotations

import numpy as np
import pytest

from serving_harness.drift import CHUNK_ROWS, DriftMonitor, build_baseline, choose_reduce, psi
from workbench.data import Dataset


@pytest.fixture(scope="module")
def digits(digits_dataset: Dataset) -> np.ndarray:
    return digits_dataset.inputs["input"]


def _monitor(baseline_inputs: np.ndarray, **settings: int) -> DriftMonitor:
    logits = baseline_inputs.reshape(len(baseline_inputs), -1)[:, :10] * 3.0  # an output that follows the input
    return DriftMonitor(build_baseline({"input": baseline_inputs}, {"logits": logits}, **settings))


def _feed(monitor: DriftMonitor, rows: np.ndarray) -> None:
    for row in rows:
        monitor.observe({"input": row[None]}, {"logits": row.reshape(1, -1)[:, :10] * 3.0}, 1)


def _scores(monitor: DriftMonitor) -> dict[tuple[str, str], float]:
    return {(s.direction, s.tensor): s.psi_max for s in monitor.scores()}


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift() -> None:
    even = np.full(10, 0.1)
    assert psi(even, even) == 0.0
    slight = np.array([0.12, 0.08, *([0.1] * 8)])
    strong = np.array([0.5, 0.05, *([0.45 / 8] * 8)])
    assert 0 < psi(even, slight) < 0.05 < psi(even, strong)


def test_traffic_like_the_recipes_data_stays_below_the_alert(digits: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    train, live = digits[:180], digits[180:]  # the baseline from one half, traffic from the other
    monitor = _monitor(train, min_rows=100)
    _feed(monitor, live[rng.permutation(len(live))])

    scores = _scores(monitor)
    assert set(scores) == {("input", "input"), ("output", "logits")}
    assert max(scores.values()) < monitor.baseline.psi_warning


def test_shifted_traffic_goes_over_the_alert(digits: np.ndarray) -> None:
    monitor = _monitor(digits, min_rows=100)
    _feed(monitor, np.clip(digits[:150] * 0.5 + 0.4, 0, 1))  # washed-out images

    assert min(_scores(monitor).values()) > monitor.baseline.psi_warning


def test_no_score_before_the_window_holds_min_rows(digits: np.ndarray) -> None:
    monitor = _monitor(digits, min_rows=50)
    _feed(monitor, digits[:49])
    assert list(monitor.scores()) == []
    _feed(monitor, digits[49:50])
    assert len(list(monitor.scores())) == 2


def test_the_window_slides_and_forgets_old_requests(digits: np.ndarray) -> None:
    monitor = _monitor(digits, window_rows=100, min_rows=50)
    _feed(monitor, np.clip(digits[:100] * 0.5 + 0.4, 0, 1))
    assert max(_scores(monitor).values()) > monitor.baseline.psi_warning
    _feed(monitor, digits[100:300])  # normal traffic pushes the shifted rows out

    assert 100 <= monitor.rows < 100 + CHUNK_ROWS  # the window moves a chunk of rows at a time
    assert max(_scores(monitor).values()) < monitor.baseline.psi_warning


def test_batches_count_their_rows(digits: np.ndarray) -> None:
    monitor = _monitor(digits, window_rows=64, min_rows=10)
    for start in range(0, 320, 32):
        batch = digits[start : start + 32]
        monitor.observe({"input": batch}, {"logits": batch.reshape(32, -1)[:, :10]}, 32)
    assert 64 <= monitor.rows < 64 + CHUNK_ROWS


def test_features_are_elements_channels_or_pooled_values() -> None:
    assert choose_reduce((-1, 1, 8, 8)) == "element"  # 64 pixels
    assert choose_reduce((-1, 3, 224, 224)) == "channel"
    assert choose_reduce((-1, 128)) == "value"  # token ids: one pooled feature
    images = np.random.default_rng(0).random((40, 3, 16, 16)).astype(np.float32)
    baseline = build_baseline({"image": images}, {"score": images.mean(axis=(1, 2, 3))[:, None]})
    assert [(t.reduce, len(t.features)) for t in baseline.inputs] == [("channel", 3)]


def test_strings_have_no_baseline() -> None:
    text = np.array([b"a", b"b"], dtype=object)
    baseline = build_baseline({"text": text, "ids": np.arange(4).reshape(2, 2)}, {"out": np.ones((2, 1))})
    assert [t.name for t in baseline.inputs] == ["ids"]
