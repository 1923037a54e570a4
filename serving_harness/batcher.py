"""Dynamic batcher: requests queue per model and run in batches on N model instances.

A client's batch is one request of ``rows`` rows along the model's batch axis, and it runs as one call:
the batcher never splits a request. ``max_request_rows`` caps one request: above it the answer is 413
at once (PayloadTooLarge, naming the limit), before any work, so a request either can run or is told
it never will; that cap, not ``max_batch_size``, is what a client is told the model accepts.
``max_batch_size`` caps how many rows the batcher *merges* across requests: a batch is cut when
``max_batch_size`` rows are queued or ``max_queue_delay_us`` has passed since the oldest queued
request (whichever comes first), and only when an instance is free, so requests that arrive while
every instance is busy join the next batch. A request of ``max_batch_size`` rows or more runs alone.
A batch holds only requests whose non-batch shapes are equal (nothing is padded: padding is not safe
for every model). ``preferred_batch_sizes``: a batch cut at the deadline with fewer than
``max_batch_size`` rows is trimmed to the largest preferred size that fits; the rest goes in the next
batch. A model without a batch axis (a fixed first dimension: the codec admits exactly that shape)
runs each request alone.

Queue limit: ``max_queue_size`` counts requests (not rows) that wait for an instance or a batch;
beyond it the answer is 503 with Retry-After (back-pressure: the same request fits later).

Fast path: with ``max_batch_size == 1``, or with no delay, an empty queue and a free instance, a
request goes straight to an instance thread and never touches the batch queue.

Each instance is its own loaded runtime with a thread of its own; the N threads take jobs from one
FIFO queue (ONNX Runtime and torch release the GIL while they compute). A job's result comes back to
the event loop with ``call_soon_threadsafe``; a plain thread and queue cost less per request than an
executor (no concurrent.futures.Future, no future chaining).

Inline (``batching.inline``, opt-in; needs ``max_batch_size == 1`` and one instance): a request runs on
the event-loop thread itself, inside ``infer``, with no thread and no hand-off (a queue put, a thread
wake-up and a ``call_soon_threadsafe`` back: most of the CPU a tiny model's request costs). The trade-off:
while the model computes, the loop does nothing else, so health checks, metrics scrapes and every other
connection wait for it; it suits models that answer in well under a millisecond. Nothing ever queues
(``queue_s`` is 0 and ``max_queue_size`` never applies); the timeout cannot interrupt a running call, so
it applies afterwards: a call longer than ``timeout_s`` answers RequestTimeout, as the threaded path would
have; a runtime error is InferenceFailed with the same message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Protocol

import numpy as np

from serving_harness.config import BatchingSettings
from serving_harness.errors import InferenceFailed, ModelNotReady, PayloadTooLarge, QueueFull, RequestTimeout
from serving_harness.runtimes.base import Runtime
from serving_harness.sched import yield_on_wake

__all__ = ["BatchObserver", "Batcher", "InferOutcome"]

logger = logging.getLogger(__name__)
Arrays = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class InferOutcome:
    """One request's outputs, how long it queued and computed, and the size of the batch it ran in."""

    outputs: Arrays
    queue_s: float
    compute_s: float
    batch_size: int


class BatchObserver(Protocol):
    """Told about batches and the queue (the metrics implement it)."""

    def batch_formed(self, rows: int) -> None: ...

    def queue_changed(self, depth: int) -> None: ...


class _Silent:
    def batch_formed(self, rows: int) -> None:
        pass

    def queue_changed(self, depth: int) -> None:
        pass


@dataclass(eq=False, slots=True)
class _Entry:
    inputs: Arrays
    rows: int
    signature: tuple[tuple[int, ...], ...]
    future: asyncio.Future[InferOutcome]
    enqueued_s: float


class Batcher:
    """Queues requests for one model and runs them in batches on its instances.

    ``batched=False`` (a model without a batch axis) runs each request on its own.
    ``max_request_rows`` (None: no limit) caps the rows of one request (PayloadTooLarge above it).
    """

    def __init__(
        self,
        instances: Sequence[Runtime],
        *,
        input_names: Sequence[str],
        batching: BatchingSettings,
        max_queue_size: int,
        max_request_rows: int | None = None,
        retry_after_s: int = 1,
        timeout_s: float = 30.0,
        batched: bool = True,
        observer: BatchObserver | None = None,
        name: str = "model",
    ) -> None:
        if not instances:
            raise ValueError("a batcher needs at least one model instance")
        if batching.inline and len(instances) != 1:
            raise ValueError(f"batching.inline needs exactly one model instance, not {len(instances)}")
        self._inline = instances[0] if batching.inline else None  # runs on the loop thread: no instance thread
        self._capacity = len(instances)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=_serve_instance, args=(r, self._jobs), name=f"sh-{name}-{i}", daemon=True)
            for i, r in enumerate(instances)
            if self._inline is None
        ]
        with yield_on_wake():  # a woken instance thread waits for the loop's time slice, not preempts it
            for thread in self._threads:
                thread.start()
        self._input_names = tuple(input_names)
        self._max_rows = batching.max_batch_size if batched else 1
        self._delay_s = batching.max_queue_delay_us / 1e6
        self._preferred = sorted(batching.preferred_batch_sizes)
        self._max_queue = max_queue_size
        self._max_request_rows = max_request_rows
        self._name = name
        self._retry_after_s = retry_after_s
        self._timeout_s = timeout_s
        self._observer: BatchObserver = observer or _Silent()
        self._busy = 0  # jobs handed to the executor and not finished
        self._queue: deque[_Entry] = deque()
        self._queued_rows = 0
        self._changed = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False
        self._expired: set[asyncio.Future[_Done]] = set()  # direct-path futures their timer cancelled

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    async def infer(self, inputs: Arrays, rows: int) -> InferOutcome:
        """Run one request (``rows`` along the first axis of every input) and return its own outputs.

        Raises PayloadTooLarge when ``rows`` is above ``max_request_rows``, RequestTimeout when there
        is no result within ``timeout_s``, QueueFull when the queue is full, InferenceFailed when the
        runtime raises.
        """
        if self._closed:
            raise ModelNotReady("the model is shutting down")
        if self._max_request_rows is not None and rows > self._max_request_rows:
            raise self._too_many_rows(rows)
        if self._inline is not None:
            return self._run_inline(self._inline, inputs, rows)  # a plain call: no coroutine frame of its own
        if self._max_rows == 1 or (self._delay_s == 0 and not self._queue and self._busy < self._capacity):
            return await self._run_direct(inputs, rows)  # the fast path, inlined: this is the hot call
        return await self._enqueue(inputs, rows)

    async def close(self, timeout_s: float = 30.0) -> None:
        """Refuse new requests, let queued and running ones finish, then stop the threads."""
        self._closed = True
        deadline = perf_counter() + timeout_s
        while (self._queue or self._running or self._busy) and perf_counter() < deadline:
            await asyncio.sleep(0.005)
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        for _ in self._threads:
            self._jobs.put(None)

    # -------------------------------------------------------------------------------- request side

    def _too_many_rows(self, rows: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the request has {rows} rows; model {self._name!r} takes at most {self._max_request_rows} rows "
            "per request (limits.max_request_rows): send them in several requests"
        )

    async def _run_direct(self, inputs: Arrays, rows: int) -> InferOutcome:
        if self._busy - self._capacity >= self._max_queue:
            raise QueueFull(f"{self._max_queue} requests already wait", retry_after_s=self._retry_after_s)
        self._observer.batch_formed(rows)
        submitted = perf_counter()
        self._busy += 1
        loop = asyncio.get_running_loop()
        future = self._submit(loop, inputs)
        timer = loop.call_later(self._timeout_s, self._expire_direct, future)  # cheaper than asyncio.timeout
        try:
            outputs, start_s, end_s = await future
        except asyncio.CancelledError:
            # Marked by the timer itself: comparing loop.time() with timer.when() misses under uvloop,
            # whose timers round to the millisecond, and a timeout would surface as a 500.
            if future in self._expired:
                raise self._timed_out() from None
            raise
        finally:
            timer.cancel()
            self._expired.discard(future)
            self._release()
        return InferOutcome(outputs, start_s - submitted, end_s - start_s, rows)

    def _run_inline(self, runtime: Runtime, inputs: Arrays, rows: int) -> InferOutcome:
        """Compute on the loop thread (``batching.inline``): it blocks the loop for the model's call."""
        self._observer.batch_formed(rows)
        start_s = perf_counter()
        try:
            outputs = runtime.infer(inputs)
        except Exception as exc:
            raise _model_failed(exc) from exc
        compute_s = perf_counter() - start_s
        if compute_s > self._timeout_s:  # nothing could interrupt the call: the threaded path's 504, late
            raise self._timed_out()
        return InferOutcome(outputs, 0.0, compute_s, rows)

    def _expire_direct(self, future: asyncio.Future[_Done]) -> None:
        self._expired.add(future)
        future.cancel()

    def _timed_out(self) -> RequestTimeout:
        return RequestTimeout(f"no result within {self._timeout_s:g} s")

    async def _enqueue(self, inputs: Arrays, rows: int) -> InferOutcome:
        if len(self._queue) >= self._max_queue:
            raise QueueFull(f"{self._max_queue} requests already queued", retry_after_s=self._retry_after_s)
        loop = asyncio.get_running_loop()
        signature = tuple(inputs[n].shape[1:] for n in self._input_names)
        entry = _Entry(inputs, rows, signature, loop.create_future(), perf_counter())
        self._queue.append(entry)
        self._queued_rows += rows
        self._observer.queue_changed(len(self._queue))
        if self._dispatcher is None:
            self._dispatcher = loop.create_task(self._dispatch_forever())
        self._changed.set()
        timer = loop.call_later(self._timeout_s, self._expire, entry.future)
        try:
            return await entry.future
        finally:
            timer.cancel()

    def _expire(self, future: asyncio.Future[InferOutcome]) -> None:
        if not future.done():  # the dispatcher skips it from now on
            future.set_exception(self._timed_out())

    def _release(self) -> None:
        # On a timeout this runs before the thread finishes; the count is a scheduling hint only:
        # a job submitted early waits in the executor's queue for the thread.
        self._busy -= 1
        self._changed.set()

    def _submit(self, loop: asyncio.AbstractEventLoop, inputs: Arrays) -> asyncio.Future[_Done]:
        """Hand a batch to the instance threads (at most N jobs at once: ``_busy`` counts them)."""
        future: asyncio.Future[_Done] = loop.create_future()
        self._jobs.put((inputs, future, loop))
        return future

    # ---------------------------------------------------------------------------------- dispatcher

    async def _dispatch_forever(self) -> None:
        while True:
            try:
                await self._wait_until(lambda: bool(self._queue))
                await self._wait_for_cut()
                await self._wait_until(lambda: self._busy < self._capacity)
                batch = self._cut()
                if batch:
                    self._launch(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not strand the queue: log it and go on
                logger.exception("the batch dispatcher failed")

    async def _wait_until(self, ready: _Predicate) -> None:
        while not ready():
            self._changed.clear()
            await self._changed.wait()

    async def _wait_for_cut(self) -> None:
        while self._queue and self._queued_rows < self._max_rows:
            remaining_s = self._queue[0].enqueued_s + self._delay_s - perf_counter()
            if remaining_s <= 0:
                return
            self._changed.clear()
            try:
                async with asyncio.timeout(remaining_s):
                    await self._changed.wait()
            except TimeoutError:
                return

    def _target_rows(self) -> int:
        available = min(self._queued_rows, self._max_rows)
        fitting = [size for size in self._preferred if size <= available]
        return fitting[-1] if fitting and available < self._max_rows else self._max_rows

    def _cut(self) -> list[_Entry]:
        """Take the oldest live request, whatever its size (a request of ``target`` rows or more runs
        alone), and those after it that share its shapes and fit."""
        target = self._target_rows()
        batch: list[_Entry] = []
        kept: list[_Entry] = []
        rows = 0
        while self._queue and rows < target:
            entry = self._queue.popleft()
            if entry.future.done():  # timed out while queued
                self._queued_rows -= entry.rows
            elif batch and (entry.signature != batch[0].signature or rows + entry.rows > target):
                kept.append(entry)
            else:
                batch.append(entry)
                rows += entry.rows
                self._queued_rows -= entry.rows
        self._queue.extendleft(reversed(kept))
        self._observer.queue_changed(len(self._queue))
        return batch

    def _launch(self, batch: list[_Entry]) -> None:
        self._busy += 1  # counted now, so the dispatcher never launches more batches than instances
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run_batch(self, batch: list[_Entry]) -> None:
        rows = sum(entry.rows for entry in batch)
        self._observer.batch_formed(rows)
        try:
            inputs = self._gather(batch)
            outputs, start_s, end_s = await self._submit(asyncio.get_running_loop(), inputs)
        except Exception as exc:
            _fail(batch, exc)
            return
        finally:
            self._release()
        self._scatter(batch, outputs, start_s, end_s, rows)

    def _gather(self, batch: list[_Entry]) -> Arrays:
        if len(batch) == 1:
            return batch[0].inputs
        return {n: np.concatenate([entry.inputs[n] for entry in batch]) for n in self._input_names}

    def _scatter(self, batch: list[_Entry], outputs: Arrays, start_s: float, end_s: float, rows: int) -> None:
        if len(batch) > 1:
            wrong = [n for n, a in outputs.items() if a.ndim == 0 or a.shape[0] != rows]
            if wrong:
                _fail(batch, InferenceFailed(f"output(s) {wrong} do not have the batch size {rows} on axis 0"))
                return
        offset = 0
        for entry in batch:
            if not entry.future.done():
                mine = outputs if len(batch) == 1 else {n: a[offset : offset + entry.rows] for n, a in outputs.items()}
                entry.future.set_result(InferOutcome(mine, start_s - entry.enqueued_s, end_s - start_s, rows))
            offset += entry.rows


_Done = tuple[Arrays, float, float]  # outputs, start and end (perf_counter seconds)
_Job = tuple[Arrays, "asyncio.Future[_Done]", asyncio.AbstractEventLoop]


def _serve_instance(runtime: Runtime, jobs: queue.SimpleQueue[_Job | None]) -> None:
    """One instance's thread: run jobs until a None arrives."""
    while (job := jobs.get()) is not None:
        inputs, future, loop = job
        if future.cancelled():  # timed out while waiting for this thread: skip the work
            continue
        try:
            start_s = perf_counter()
            outputs = runtime.infer(inputs)
            done: _Done | InferenceFailed = (outputs, start_s, perf_counter())
        except Exception as exc:
            done = _model_failed(exc)
        with contextlib.suppress(RuntimeError):  # the loop closed while this job ran
            loop.call_soon_threadsafe(_settle, future, done)


def _model_failed(exc: Exception) -> InferenceFailed:
    """What a runtime's exception becomes, on an instance thread or inline."""
    return InferenceFailed(f"the model failed: {type(exc).__name__}: {exc}")


def _settle(future: asyncio.Future[_Done], done: _Done | InferenceFailed) -> None:
    if future.done():  # timed out meanwhile
        return
    if isinstance(done, InferenceFailed):
        future.set_exception(done)
    else:
        future.set_result(done)


class _Predicate(Protocol):
    def __call__(self) -> bool: ...


def _fail(batch: list[_Entry], exc: Exception) -> None:
    for entry in batch:
        if not entry.future.done():
            entry.future.set_exception(exc)
