"""Prometheus metrics, in a registry of their own per app (so tests and several apps never collide).

Exposed at ``/metrics``::

    sh_requests_total{model,status}           inference requests by HTTP status
    sh_request_duration_seconds{model}        request latency in the server (histogram)
    sh_queue_duration_seconds{model}          time waiting for a batch and an instance (histogram)
    sh_compute_duration_seconds{model}        time in the runtime, per request's batch (histogram)
    sh_batch_size{model}                      rows per batch run (histogram)
    sh_inflight_requests{model}               requests being served now
    sh_queue_depth{model}                     requests waiting in the batcher's queue
    sh_model_load_seconds{model}              time to load all instances of the model
    sh_model_ready{model}                     1 when the model serves, else 0
    sh_cache_hits_total{model} / sh_cache_misses_total{model}   prediction cache lookups

Recording is plain arithmetic on the event loop's thread (no locks: prometheus_client's metric
objects cost a lock per update, several per request); the numbers become Prometheus families only
when ``/metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "Metrics", "ModelMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
UNKNOWN_MODEL = "_unknown"  # requests for names that are not served (keeps label values bounded)


class _Histogram:
    """Counts per bucket (``le`` semantics, +Inf last) and a sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, result = 0, []
        for bound, count in zip((*map(_le, self.bounds), "+Inf"), self.counts, strict=True):
            cumulative += count
            result.append((bound, float(cumulative)))
        return result


def _le(bound: float) -> str:
    return repr(float(bound))


class ModelMetrics:
    """One model's numbers; also the batcher's observer. Update only from the event loop's thread."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.requests: dict[int, int] = {}
        self.latency = _Histogram(LATENCY_BUCKETS_S)
        self.queue = _Histogram(LATENCY_BUCKETS_S)
        self.compute = _Histogram(LATENCY_BUCKETS_S)
        self.batch = _Histogram(BATCH_BUCKETS)
        self.inflight = 0
        self.depth = 0
        self.load_s = 0.0
        self.ready = 0
        self.cache_hits = 0
        self.cache_misses = 0

    def request_started(self) -> None:
        self.inflight += 1

    def request_done(self, status: int, duration_s: float) -> None:
        """Count a finished request (by HTTP status) and its latency."""
        self.inflight -= 1
        self.requests[status] = self.requests.get(status, 0) + 1
        self.latency.observe(duration_s)

    def timing(self, queue_s: float, compute_s: float) -> None:
        """Record a request's queue and compute time."""
        self.queue.observe(queue_s)
        self.compute.observe(compute_s)

    def batch_formed(self, rows: int) -> None:
        self.batch.observe(rows)

    def queue_changed(self, depth: int) -> None:
        self.depth = depth

    def cache_lookup(self, hit: bool) -> None:
        if hit:
            self.cache_hits += 1
        else:
            self.cache_misses += 1


class Metrics:
    """All models' metrics and the registry ``/metrics`` renders."""

    def __init__(self) -> None:
        self.models: dict[str, ModelMetrics] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def for_model(self, model: str) -> ModelMetrics:
        """The metrics of one model (created on first use)."""
        if model not in self.models:
            self.models[model] = ModelMetrics(model)
        return self.models[model]

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def describe(self) -> list[Metric]:
        return []  # nothing to check for name clashes: the registry is ours alone

    def collect(self) -> Iterator[Metric]:
        models = list(self.models.values())
        yield _counter("sh_requests", "Inference requests by HTTP status.", models)
        yield _histogram("sh_request_duration_seconds", "Request latency in the server.", models, "latency")
        yield _histogram("sh_queue_duration_seconds", "Time waiting for a batch and an instance.", models, "queue")
        yield _histogram("sh_compute_duration_seconds", "Time in the runtime.", models, "compute")
        yield _histogram("sh_batch_size", "Rows per batch run.", models, "batch")
        yield _gauge("sh_inflight_requests", "Requests being served.", models, "inflight")
        yield _gauge("sh_queue_depth", "Requests waiting in the batch queue.", models, "depth")
        yield _gauge("sh_model_load_seconds", "Time to load every instance.", models, "load_s")
        yield _gauge("sh_model_ready", "1 when the model serves, else 0.", models, "ready")
        yield _simple_counter("sh_cache_hits", "Prediction cache hits.", models, "cache_hits")
        yield _simple_counter("sh_cache_misses", "Prediction cache misses.", models, "cache_misses")


def _counter(name: str, documentation: str, models: list[ModelMetrics]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=["model", "status"])
    for m in models:
        for status, count in sorted(m.requests.items()):
            family.add_metric([m.model, str(status)], count)
    return family


def _simple_counter(name: str, documentation: str, models: list[ModelMetrics], attribute: str) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=["model"])
    for m in models:
        family.add_metric([m.model], getattr(m, attribute))
    return family


def _gauge(name: str, documentation: str, models: list[ModelMetrics], attribute: str) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=["model"])
    for m in models:
        family.add_metric([m.model], getattr(m, attribute))
    return family


def _histogram(name: str, documentation: str, models: list[ModelMetrics], attribute: str) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=["model"])
    for m in models:
        histogram: _Histogram = getattr(m, attribute)
        family.add_metric([m.model], histogram.buckets(), histogram.total)
    return family
