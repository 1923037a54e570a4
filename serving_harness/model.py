"""A served model: its config, its N loaded instances behind a batcher, its cache and its state.

A model from a bundle may carry its own settings, a drift baseline and a fallback model (see
``serving_harness.fallback``): ``serving`` is true while either of them can answer.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from time import perf_counter
from typing import NamedTuple

import numpy as np

from serving_harness.batcher import Batcher, InferOutcome
from serving_harness.cache import PredictionCache
from serving_harness.config import ServingConfig
from serving_harness.drift import DriftMonitor, load_baseline
from serving_harness.errors import ModelNotReady
from serving_harness.fallback import infer_with_fallback
from serving_harness.metrics import ModelMetrics
from serving_harness.protocol.codec import InferRequest, ModelSchema, nonfinite_count
from serving_harness.runtimes import create_runtime
from serving_harness.runtimes.base import Runtime

__all__ = ["Answer", "ModelConfig", "ModelState", "ServedModel"]

logger = logging.getLogger(__name__)
_NO_NAMES: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """A model to serve: its name in the URL, its artifact (``.onnx`` file or torch directory), its version.

    Bundles also give the model its own ``settings`` (None: the server's), a ``drift_baseline`` file and
    a ``fallback`` model that answers when this one errors, times out or cannot load.
    """

    name: str
    path: Path
    version: str = "1"
    settings: ServingConfig | None = None
    drift_baseline: Path | None = None
    fallback: ModelConfig | None = None
    trusted: bool | None = None  # bundles: True when --trust verified its signature (None: not a bundle)


class Answer(NamedTuple):
    """A request's outputs, how long it queued and computed, and which outputs hold NaN or infinities
    (counted once, here: the encoders take ``nonfinite_outputs`` instead of looking again).

    A named tuple: as immutable as a frozen dataclass, and made in a third of the time (one per request)."""

    outputs: dict[str, np.ndarray]
    queue_s: float
    compute_s: float
    nonfinite_outputs: frozenset[str]


class ModelState(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


class ServedModel:
    """Loads ``settings.instances`` runtimes for one model and serves requests through a batcher."""

    def __init__(self, config: ModelConfig, settings: ServingConfig, metrics: ModelMetrics) -> None:
        self.config = config
        self.settings = config.settings or settings
        self.metrics = metrics
        metrics.unsigned = None if config.trusted is None else int(not config.trusted)
        self.state = ModelState.LOADING
        self.reason: str | None = None
        self.schema: ModelSchema | None = None
        self.cache = PredictionCache(self.settings.cache_size) if self.settings.cache_size > 0 else None
        self.fallback: ServedModel | None = None  # set by the app when config.fallback is given
        self.drift: DriftMonitor | None = None
        self._batcher: Batcher | None = None

    @property
    def serving(self) -> bool:
        """True when requests can be answered: this model is ready, or it failed to load and its fallback
        is ready (while it still loads, the server is not ready: traffic waits for the model it measured)."""
        if self.state is ModelState.READY:
            return True
        return self.state is ModelState.UNAVAILABLE and self.fallback is not None and self.fallback.serving

    @property
    def max_request_rows(self) -> int:
        """The rows one request may carry (413 above): what a client is told this model accepts."""
        return self.settings.limits.max_request_rows

    @property
    def active_schema(self) -> ModelSchema | None:
        """The schema requests are decoded with: this model's, or its fallback's while this one is not loaded."""
        if self.schema is not None or self.fallback is None:
            return self.schema
        return self.fallback.schema

    def load(self) -> None:
        """Load every instance (blocking: call it in a thread). A failure leaves the model UNAVAILABLE."""
        if self.fallback is not None:
            self.fallback.load()  # first: it can answer while this one loads or if it cannot
        started_s = perf_counter()
        try:
            instances, schema = self._load_instances()
        except Exception as exc:
            self.reason = f"{type(exc).__name__}: {exc}"
            self.state = ModelState.UNAVAILABLE
            logger.error("model failed to load", extra={"model": self.config.name, "reason": self.reason})
            return
        self._batcher = Batcher(
            instances,
            input_names=schema.input_names,
            batching=self.settings.batching,
            max_queue_size=self.settings.limits.max_queue_size,
            max_request_rows=self.settings.limits.max_request_rows,
            retry_after_s=self.settings.limits.retry_after_s,
            timeout_s=self.settings.limits.request_timeout_s,
            batched=schema.batched,
            observer=self.metrics,
            name=self.config.name,
        )
        load_s = perf_counter() - started_s
        self.metrics.load_s = load_s
        self.metrics.ready = 1
        self.schema = schema
        self._load_drift()
        _keep_for_life()
        self.state = ModelState.READY
        logger.info("model ready", extra={"model": self.config.name, "load_s": round(load_s, 3)})

    def _load_drift(self) -> None:
        """Drift monitoring is an observer: a baseline that cannot be read is logged, never fatal."""
        if self.config.drift_baseline is None:
            return
        try:
            self.drift = DriftMonitor(load_baseline(self.config.drift_baseline))
        except (OSError, ValueError) as exc:
            logger.error("drift baseline unreadable", extra={"model": self.config.name, "reason": str(exc)})
            return
        self.metrics.drift = self.drift

    def _load_instances(self) -> tuple[list[Runtime], ModelSchema]:
        instances = [create_runtime(self.settings.runtime.name) for _ in range(self.settings.instances)]
        metadata = [runtime.load(self.config.path, self.settings.runtime) for runtime in instances]
        return instances, ModelSchema(metadata[0])

    def infer(self, inputs: dict[str, np.ndarray], rows: int) -> Awaitable[InferOutcome]:
        """Run one request through the cache (when on) and the batcher (see Batcher.infer for errors);
        with a fallback, a failed request is answered by it."""
        if self.fallback is not None:
            return infer_with_fallback(self, self.fallback, inputs, rows)
        return self.infer_here(inputs, rows)

    async def answer(self, request: InferRequest) -> Answer:
        """One decoded request, as every protocol serves it: its non-finite values counted both ways (the
        inputs' only when the decoder has not), the inference (``infer``), the queue and compute times
        recorded, and the drift monitor shown both sides."""
        inputs = request.inputs
        if request.nonfinite_inputs != 0:  # 0: the decoder counted none (most requests): nothing to record
            self._count_inputs_nonfinite(request)
        outcome = await self.infer(inputs, request.rows)  # times out itself (RequestTimeout)
        outputs, queue_s, compute_s = outcome.outputs, outcome.queue_s, outcome.compute_s
        self.metrics.timing(queue_s, compute_s)
        nonfinite = self._nonfinite_outputs(outputs)
        if self.drift is not None:  # bundles with a baseline only
            self.drift.observe(inputs, outputs, request.rows)
        return Answer(outputs, queue_s, compute_s, nonfinite)

    def _count_inputs_nonfinite(self, request: InferRequest) -> None:
        count = request.nonfinite_inputs
        if count is None:
            count = sum(nonfinite_count(array) for array in request.inputs.values())
        if count:
            self.metrics.nonfinite_seen("input", count)

    def _nonfinite_outputs(self, outputs: dict[str, np.ndarray]) -> frozenset[str]:
        """The outputs with NaN or infinities (counted in the metrics): the one look at the outputs' values."""
        found: dict[str, int] = {}
        for name, array in outputs.items():
            count = nonfinite_count(array)
            if count:
                found[name] = count
        if not found:
            return _NO_NAMES
        self.metrics.nonfinite_seen("output", sum(found.values()))
        return frozenset(found)

    def infer_here(self, inputs: dict[str, np.ndarray], rows: int) -> Awaitable[InferOutcome]:
        """Run one request on this model only (no fallback)."""
        if self._batcher is None:
            raise ModelNotReady(f"model {self.config.name!r} is not ready: {self.reason or 'loading'}")
        if self.cache is None:
            return self._batcher.infer(inputs, rows)  # no extra coroutine frame on the hot path
        return self._infer_cached(self.cache, self._batcher, inputs, rows)

    async def _infer_cached(
        self, cache: PredictionCache, batcher: Batcher, inputs: dict[str, np.ndarray], rows: int
    ) -> InferOutcome:
        key = cache.key(inputs)
        cached = cache.get(key)
        if cached is not None:
            self.metrics.cache_lookup(hit=True)
            return InferOutcome(cached, queue_s=0.0, compute_s=0.0, batch_size=0)
        self.metrics.cache_lookup(hit=False)
        outcome = await batcher.infer(inputs, rows)
        cache.put(key, outcome.outputs)
        return outcome

    async def close(self, timeout_s: float) -> None:
        """Finish queued requests and stop the instance threads."""
        self.metrics.ready = 0
        if self._batcher is not None:
            await self._batcher.close(timeout_s)
        if self.fallback is not None:
            await self.fallback.close(timeout_s)


def _keep_for_life() -> None:
    """Move everything allocated so far (the imports, the loaded runtimes) out of the garbage collector's
    reach: it lives as long as the process, and a full collection walked all of it, a pause of about
    20 ms on this project's CPU that landed on whichever requests were in flight (issue 17's p99). The
    collector then walks only what requests allocate. Garbage is collected first so none is kept."""
    gc.collect()
    gc.freeze()
