"""The dynamic batcher alone, with a fake runtime that records the batches it is given."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np
import pytest

from serving_harness.batcher import Batcher, InferOutcome
from serving_harness.config import BatchingSettings, RuntimeSettings
from serving_harness.errors import InferenceFailed, PayloadTooLarge, QueueFull, RequestTimeout
from serving_harness.runtimes.base import ModelMetadata

T = TypeVar("T")


class FakeRuntime:
    """y = 2x; remembers each batch's shape and how many batches ran at once."""

    name: ClassVar[str] = "fake"
    lock = threading.Lock()

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.batches: list[tuple[int, ...]] = []
        self.running = 0
        self.most_running = 0

    def load(self, path: Path, settings: RuntimeSettings) -> ModelMetadata:
        raise NotImplementedError

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with FakeRuntime.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.batches.append(inputs["x"].shape)
        time.sleep(self.delay_s)
        with FakeRuntime.lock:
            self.running -= 1
        if self.fail:
            raise ValueError("boom")
        return {"y": inputs["x"] * 2}


class Recorder:
    def __init__(self) -> None:
        self.depths: list[int] = []
        self.batch_rows: list[int] = []

    def batch_formed(self, rows: int) -> None:
        self.batch_rows.append(rows)

    def queue_changed(self, depth: int) -> None:
        self.depths.append(depth)


def make_batcher(
    runtime: FakeRuntime | list[FakeRuntime],
    *,
    max_batch_size: int = 8,
    delay_us: int = 0,
    preferred: tuple[int, ...] = (),
    max_queue_size: int = 100,
    observer: Recorder | None = None,
) -> Batcher:
    batching = BatchingSettings(
        max_batch_size=max_batch_size, max_queue_delay_us=delay_us, preferred_batch_sizes=preferred
    )
    instances = runtime if isinstance(runtime, list) else [runtime]
    return Batcher(instances, input_names=["x"], batching=batching, max_queue_size=max_queue_size, observer=observer)


def rows(start: int, count: int, width: int = 3) -> np.ndarray:
    return np.arange(start * width, (start + count) * width, dtype=np.float32).reshape(count, width)


def run(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await asyncio.wait_for(make(), timeout=10)

    return asyncio.run(main())


def test_cuts_a_batch_at_max_batch_size_before_the_delay() -> None:
    runtime = FakeRuntime()
    batcher = make_batcher(runtime, max_batch_size=4, delay_us=10_000_000)

    async def scenario() -> list[InferOutcome]:
        return await asyncio.gather(*(batcher.infer({"x": rows(i, 1)}, 1) for i in range(8)))

    started = time.monotonic()
    outcomes = run(scenario)

    assert time.monotonic() - started < 5  # far below the 10 s delay
    assert runtime.batches == [(4, 3), (4, 3)]
    for i, outcome in enumerate(outcomes):
        np.testing.assert_array_equal(outcome.outputs["y"], rows(i, 1) * 2)
        assert outcome.batch_size == 4


def test_cuts_a_partial_batch_after_the_delay() -> None:
    runtime = FakeRuntime()
    batcher = make_batcher(runtime, max_batch_size=100, delay_us=50_000)

    async def scenario() -> list[InferOutcome]:
        return await asyncio.gather(*(batcher.infer({"x": rows(i, 1)}, 1) for i in range(3)))

    outcomes = run(scenario)

    assert runtime.batches == [(3, 3)]
    assert all(o.queue_s >= 0.04 for o in outcomes)


def test_requests_with_several_rows_get_their_own_rows_back() -> None:
    runtime = FakeRuntime()
    batcher = make_batcher(runtime, max_batch_size=8, delay_us=20_000)
    sizes = [3, 1, 2, 2]
    starts = np.cumsum([0, *sizes])

    async def scenario() -> list[InferOutcome]:
        calls = [batcher.infer({"x": rows(int(s), n)}, n) for s, n in zip(starts, sizes, strict=False)]
        return await asyncio.gather(*calls)

    outcomes = run(scenario)

    assert runtime.batches == [(8, 3)]
    for start, count, outcome in zip(starts, sizes, outcomes, strict=False):
        np.testing.assert_array_equal(outcome.outputs["y"], rows(int(start), count) * 2)


def test_a_request_larger_than_max_batch_size_runs_whole_in_one_call() -> None:
    runtime = FakeRuntime()
    recorder = Recorder()
    batcher = make_batcher(runtime, max_batch_size=4, delay_us=1_000, observer=recorder)

    outcome = run(lambda: batcher.infer({"x": rows(0, 10)}, 10))

    assert runtime.batches == [(10, 3)]
    assert recorder.batch_rows == [10]
    assert outcome.batch_size == 10
    np.testing.assert_array_equal(outcome.outputs["y"], rows(0, 10) * 2)


def test_a_client_batch_at_max_batch_one_is_one_call() -> None:
    runtime = FakeRuntime()
    recorder = Recorder()
    batcher = make_batcher(runtime, max_batch_size=1, observer=recorder)

    outcome = run(lambda: batcher.infer({"x": rows(0, 16)}, 16))

    assert runtime.batches == [(16, 3)]
    assert recorder.batch_rows == [16]
    np.testing.assert_array_equal(outcome.outputs["y"], rows(0, 16) * 2)


def test_a_large_request_runs_alone_and_the_small_ones_around_it_merge() -> None:
    runtime = FakeRuntime()
    batcher = make_batcher(runtime, max_batch_size=4, delay_us=20_000)
    sizes = [1, 6, 1, 1]
    starts = np.cumsum([0, *sizes])

    async def scenario() -> list[InferOutcome]:
        calls = [batcher.infer({"x": rows(int(s), n)}, n) for s, n in zip(starts, sizes, strict=False)]
        return await asyncio.gather(*calls)

    outcomes = run(scenario)

    assert sorted(b[0] for b in runtime.batches) == [3, 6]  # the small ones merged, the large one alone
    for start, count, outcome in zip(starts, sizes, outcomes, strict=False):
        np.testing.assert_array_equal(outcome.outputs["y"], rows(int(start), count) * 2)


def test_a_request_over_max_request_rows_is_refused_before_any_work() -> None:
    runtime = FakeRuntime()
    instances = [runtime]
    batching = BatchingSettings(max_batch_size=1)
    batcher = Batcher(instances, input_names=["x"], batching=batching, max_queue_size=10, max_request_rows=8, name="m")

    with pytest.raises(PayloadTooLarge, match=r"9 rows; model 'm' takes at most 8 rows per request") as refused:
        run(lambda: batcher.infer({"x": rows(0, 9)}, 9))

    assert refused.value.status_code == 413
    assert runtime.batches == []
    assert run(lambda: batcher.infer({"x": rows(0, 8)}, 8)).batch_size == 8  # at the limit: runs


def test_the_queue_limit_counts_requests_not_rows() -> None:
    runtime = FakeRuntime(delay_s=0.05)
    batcher = make_batcher(runtime, max_batch_size=1, max_queue_size=2)

    async def scenario() -> list[InferOutcome | BaseException]:
        calls = [batcher.infer({"x": rows(0, 500)}, 500) for _ in range(3)]  # 1 running + 2 waiting
        return await asyncio.gather(*calls, return_exceptions=True)

    results = run(scenario)

    assert all(isinstance(r, InferOutcome) for r in results)
    assert runtime.batches == [(500, 3)] * 3


def test_requests_with_different_non_batch_shapes_never_share_a_batch() -> None:
    runtime = FakeRuntime()
    batcher = make_batcher(runtime, max_batch_size=8, delay_us=20_000)

    async def scenario() -> list[InferOutcome]:
        calls = [batcher.infer({"x": rows(i, 1, width=2 + i % 2)}, 1) for i in range(4)]
        return await asyncio.gather(*calls)

    outcomes = run(scenario)

    assert sorted(runtime.batches) == [(2, 2), (2, 3)]
    for i, outcome in enumerate(outcomes):
        np.testing.assert_array_equal(outcome.outputs["y"], rows(i, 1, width=2 + i % 2) * 2)


def test_preferred_batch_sizes_trim_a_batch_cut_at_the_deadline() -> None:
    runtime = FakeRuntime()
    batcher = make_batcher(runtime, max_batch_size=8, delay_us=20_000, preferred=(2,))

    async def scenario() -> list[InferOutcome]:
        return await asyncio.gather(*(batcher.infer({"x": rows(i, 1)}, 1) for i in range(3)))

    run(scenario)

    assert [b[0] for b in runtime.batches] == [2, 1]


def test_batch_one_takes_the_fast_path_without_the_queue() -> None:
    runtime = FakeRuntime()
    recorder = Recorder()
    batcher = make_batcher(runtime, max_batch_size=1, observer=recorder)

    async def scenario() -> list[InferOutcome]:
        return await asyncio.gather(*(batcher.infer({"x": rows(i, 1)}, 1) for i in range(5)))

    outcomes = run(scenario)

    assert runtime.batches == [(1, 3)] * 5
    assert recorder.depths == []  # nothing was ever queued
    assert recorder.batch_rows == [1] * 5
    assert [float(o.outputs["y"][0, 0]) for o in outcomes] == [0.0, 6.0, 12.0, 18.0, 24.0]


def test_no_delay_and_an_idle_instance_runs_directly() -> None:
    runtime = FakeRuntime()
    recorder = Recorder()
    batcher = make_batcher(runtime, max_batch_size=8, delay_us=0, observer=recorder)

    outcome = run(lambda: batcher.infer({"x": rows(0, 2)}, 2))

    assert recorder.depths == []
    np.testing.assert_array_equal(outcome.outputs["y"], rows(0, 2) * 2)


def test_no_delay_batches_what_queues_while_the_instance_is_busy() -> None:
    runtime = FakeRuntime(delay_s=0.05)
    batcher = make_batcher(runtime, max_batch_size=8, delay_us=0)

    async def scenario() -> list[InferOutcome]:
        return await asyncio.gather(*(batcher.infer({"x": rows(i, 1)}, 1) for i in range(5)))

    outcomes = run(scenario)

    assert [b[0] for b in runtime.batches] == [1, 4]
    for i, outcome in enumerate(outcomes):
        np.testing.assert_array_equal(outcome.outputs["y"], rows(i, 1) * 2)


def test_instances_run_batches_in_parallel() -> None:
    instances = [FakeRuntime(delay_s=0.1), FakeRuntime(delay_s=0.1)]
    batcher = make_batcher(instances, max_batch_size=1)

    async def scenario() -> list[InferOutcome]:
        return await asyncio.gather(*(batcher.infer({"x": rows(i, 1)}, 1) for i in range(4)))

    run(scenario)

    assert [len(r.batches) for r in instances] == [2, 2]
    assert all(r.most_running == 1 for r in instances)  # one batch at a time per instance


def test_a_runtime_error_fails_every_request_of_the_batch() -> None:
    batcher = make_batcher(FakeRuntime(fail=True), max_batch_size=4, delay_us=10_000)

    async def scenario() -> list[InferOutcome | BaseException]:
        calls = [batcher.infer({"x": rows(i, 1)}, 1) for i in range(3)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = run(scenario)

    assert all(isinstance(r, InferenceFailed) and "ValueError: boom" in str(r) for r in results)


def test_a_full_queue_refuses_with_queue_full() -> None:
    batcher = make_batcher(FakeRuntime(), max_batch_size=8, delay_us=50_000, max_queue_size=2)

    async def scenario() -> list[InferOutcome | BaseException]:
        calls = [batcher.infer({"x": rows(i, 1)}, 1) for i in range(3)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = run(scenario)

    assert isinstance(results[2], QueueFull)
    assert all(isinstance(r, InferOutcome) for r in results[:2])


def test_a_request_that_timed_out_in_the_queue_never_runs() -> None:
    runtime = FakeRuntime()
    batcher = make_batcher(runtime, max_batch_size=8, delay_us=100_000)

    async def scenario() -> InferOutcome:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await batcher.infer({"x": rows(0, 1)}, 1)
        return await batcher.infer({"x": rows(5, 1)}, 1)

    outcome = run(scenario)

    assert runtime.batches == [(1, 3)]
    np.testing.assert_array_equal(outcome.outputs["y"], rows(5, 1) * 2)


def test_close_lets_queued_requests_finish() -> None:
    runtime = FakeRuntime()
    batcher = make_batcher(runtime, max_batch_size=8, delay_us=100_000)

    async def scenario() -> InferOutcome:
        pending = asyncio.create_task(batcher.infer({"x": rows(0, 1)}, 1))
        await asyncio.sleep(0.01)
        await batcher.close(timeout_s=5)
        return await pending

    outcome = run(scenario)

    np.testing.assert_array_equal(outcome.outputs["y"], rows(0, 1) * 2)


@pytest.mark.parametrize("delay_us", [0, 1_000_000])  # the fast path, and a request left in the queue
def test_no_result_within_the_timeout_is_request_timeout(delay_us: int) -> None:
    batching = BatchingSettings(max_batch_size=8, max_queue_delay_us=delay_us)
    runtime = FakeRuntime(delay_s=0.3 if delay_us == 0 else 0.0)
    batcher = Batcher([runtime], input_names=["x"], batching=batching, max_queue_size=10, timeout_s=0.05)

    with pytest.raises(RequestTimeout, match=r"no result within 0\.05 s"):
        run(lambda: batcher.infer({"x": rows(0, 1)}, 1))
