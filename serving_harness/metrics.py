"""Prometheus metrics, in a registry of their own per app (so tests and several apps never collide).

Exposed at ``/metrics``::

    sh_requests_total{model,protocol,status}  inference requests by status (protocol: http, grpc)
    sh_request_duration_seconds{model,protocol}  request latency in the server (histogram)
    sh_queue_duration_seconds{model}          time waiting for a batch and an instance (histogram)
    sh_compute_duration_seconds{model}        time in the runtime, per request's batch (histogram)
    sh_batch_size{model}                      rows per batch run (histogram)
    sh_inflight_requests{model}               requests being served now
    sh_queue_depth{model}                     requests waiting in the batcher's queue
    sh_model_load_seconds{model}              time to load all instances of the model
    sh_model_ready{model}                     1 when the model serves, else 0
    sh_cache_hits_total{model} / sh_cache_misses_total{model}   prediction cache lookups
    sh_fallback_total{model,reason}           requests the fallback answered (reason: error, timeout, unavailable)
    sh_drift_psi{model,direction,tensor,stat} PSI of recent requests against the baseline (stat: max, mean)
    sh_drift_window_rows{model}               rows in the drift window
    sh_bundle_unsigned{model}                 bundles: 1 when served without a signature verified by --trust
    sh_nonfinite_values_total{model,direction}  NaN and infinite values in inputs and outputs (direction)
    sh_unmatched_requests_total{status}       requests for no route (404) or a method it does not take (405)
    sh_connections_closed_total{reason}       connections the server closed on a client (reason:
                                              header_timeout, body_timeout, limit; see protocol.connection)

``status`` is the HTTP status for both protocols: a gRPC call counts the status its error maps from
(``protocol.grpc_service``: 401 is UNAUTHENTICATED, 429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE...), so one
``status=~"5.."`` alert and one error-rate panel cover both.

With ``Metrics(version_label=True)`` (bundles, canaries) every per-model series also carries ``version``, so two
versions of one model behind one endpoint are told apart.

Recording is plain arithmetic on the event loop's thread (no locks: prometheus_client's metric
objects cost a lock per update, several per request); the numbers become Prometheus families only
when ``/metrics`` is scraped.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from serving_harness.drift import DriftMonitor

__all__ = ["CONTENT_TYPE", "PROTOCOLS", "Metrics", "ModelMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
UNKNOWN_MODEL = "_unknown"  # requests for names that are not served (keeps label values bounded)
PROTOCOLS = ("http", "grpc")  # the values of the ``protocol`` label


class _Histogram:
    """Counts per bucket (``le`` semantics, +Inf last) and a sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

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


class _Total:
    """A count and a sum of seconds."""

    __slots__ = ("count", "total_s")

    def __init__(self) -> None:
        self.count = 0
        self.total_s = 0.0

    def add(self, duration_s: float) -> None:
        self.count += 1
        self.total_s += duration_s


class ModelMetrics:
    """One model's numbers; also the batcher's observer. Update only from the event loop's thread."""

    def __init__(self, model: str, version: str | None = None) -> None:
        self.model = model
        self.labels = (model,) if version is None else (model, version)  # values of Metrics.label_names
        self.requests: dict[tuple[str, int], int] = {}  # (protocol, status) -> requests
        self.latency = {protocol: _Histogram(LATENCY_BUCKETS_S) for protocol in PROTOCOLS}
        self.succeeded = _Total()  # Triton's statistics (protocol.extensions): success and fail, both protocols
        self.failed = _Total()
        self.last_success_ms = 0  # wall clock, ms since the epoch
        self.queue = _Histogram(LATENCY_BUCKETS_S)
        self.compute = _Histogram(LATENCY_BUCKETS_S)
        self.batch = _Histogram(BATCH_BUCKETS)
        self.inflight = 0
        self.depth = 0
        self.load_s = 0.0
        self.ready = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.fallbacks: dict[str, int] = {}
        self.nonfinite: dict[str, int] = {}
        self.drift: DriftMonitor | None = None
        self.unsigned: int | None = None  # bundles only: 1 without a verified signature

    def request_started(self) -> None:
        self.inflight += 1

    def request_done(self, status: int, duration_s: float, protocol: str = "http") -> None:
        """Count a finished request (by HTTP status, or the one its gRPC code maps from) and its latency."""
        self.inflight -= 1
        key = (protocol, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency[protocol].observe(duration_s)
        if status == 200:
            self.succeeded.add(duration_s)
            self.last_success_ms = time.time_ns() // 1_000_000
        else:
            self.failed.add(duration_s)

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

    def nonfinite_seen(self, direction: str, count: int) -> None:
        """Count NaN and infinite values in a request's inputs or its outputs (``direction``)."""
        self.nonfinite[direction] = self.nonfinite.get(direction, 0) + count

    def fallback_used(self, reason: str) -> None:
        """Count a request the fallback answered because this model failed it."""
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1


class Metrics:
    """All models' metrics and the registry ``/metrics`` renders."""

    def __init__(self, *, version_label: bool = False) -> None:
        self.version_label = version_label
        self.label_names = ("model", "version") if version_label else ("model",)
        self.models: dict[tuple[str, str], ModelMetrics] = {}
        self.unmatched: dict[int, int] = {}  # HTTP status -> requests no route took
        self.closed_connections: dict[str, int] = {}  # reason -> connections closed (protocol.connection)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def for_model(self, model: str, version: str = "") -> ModelMetrics:
        """The metrics of one model version (created on first use); ``version`` is a label only with version_label."""
        key = (model, version)
        if key not in self.models:
            self.models[key] = ModelMetrics(model, version if self.version_label else None)
        return self.models[key]

    def unmatched_request(self, status: int) -> None:
        """Count a request for no route (404) or with a method its route does not take (405)."""
        self.unmatched[status] = self.unmatched.get(status, 0) + 1

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def describe(self) -> list[Metric]:
        return []  # nothing to check for name clashes: the registry is ours alone

    def collect(self) -> Iterator[Metric]:
        models = list(self.models.values())
        names = list(self.label_names)
        yield _counter("sh_requests", "Inference requests by protocol and HTTP status.", models, names)
        yield _latency(models, names)
        yield _histogram(
            "sh_queue_duration_seconds", "Time waiting for a batch and an instance.", models, "queue", names
        )
        yield _histogram("sh_compute_duration_seconds", "Time in the runtime.", models, "compute", names)
        yield _histogram("sh_batch_size", "Rows per batch run.", models, "batch", names)
        yield _gauge("sh_inflight_requests", "Requests being served.", models, "inflight", names)
        yield _gauge("sh_queue_depth", "Requests waiting in the batch queue.", models, "depth", names)
        yield _gauge("sh_model_load_seconds", "Time to load every instance.", models, "load_s", names)
        yield _gauge("sh_model_ready", "1 when the model serves, else 0.", models, "ready", names)
        yield _simple_counter("sh_cache_hits", "Prediction cache hits.", models, "cache_hits", names)
        yield _simple_counter("sh_cache_misses", "Prediction cache misses.", models, "cache_misses", names)
        yield _labelled_counter("sh_fallback", "Requests the fallback answered.", models, names, "reason", "fallbacks")
        yield _labelled_counter(
            "sh_nonfinite_values", "NaN and infinite values by direction.", models, names, "direction", "nonfinite"
        )
        yield from _drift(models, names)
        signed = [m for m in models if m.unsigned is not None]
        yield _gauge("sh_bundle_unsigned", "1 when served without a verified signature.", signed, "unsigned", names)
        yield _server_counter("sh_unmatched_requests", "Requests for no route or method.", "status", self.unmatched)
        yield _server_counter(
            "sh_connections_closed", "Connections closed on a client.", "reason", self.closed_connections
        )


def _counter(name: str, documentation: str, models: list[ModelMetrics], names: list[str]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[*names, "protocol", "status"])
    for m in models:
        for (protocol, status), count in sorted(m.requests.items()):
            family.add_metric([*m.labels, protocol, str(status)], count)
    return family


def _latency(models: list[ModelMetrics], names: list[str]) -> Metric:
    """The request latency per protocol; a protocol with no request yet is left out."""
    family = HistogramMetricFamily(
        "sh_request_duration_seconds", "Request latency in the server.", labels=[*names, "protocol"]
    )
    for m in models:
        for protocol, histogram in m.latency.items():
            if histogram.count or protocol == "http":  # http always: dashboards expect the series
                family.add_metric([*m.labels, protocol], histogram.buckets(), histogram.total)
    return family


def _server_counter(name: str, documentation: str, label: str, counts: dict[Any, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([str(value)], count)
    return family


def _labelled_counter(
    name: str, documentation: str, models: list[ModelMetrics], names: list[str], label: str, attribute: str
) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[*names, label])
    for m in models:
        counts: dict[str, int] = getattr(m, attribute)
        for value, count in sorted(counts.items()):
            family.add_metric([*m.labels, value], count)
    return family


def _simple_counter(
    name: str, documentation: str, models: list[ModelMetrics], attribute: str, names: list[str]
) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=names)
    for m in models:
        family.add_metric(list(m.labels), getattr(m, attribute))
    return family


def _gauge(name: str, documentation: str, models: list[ModelMetrics], attribute: str, names: list[str]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=names)
    for m in models:
        family.add_metric(list(m.labels), getattr(m, attribute))
    return family


def _histogram(name: str, documentation: str, models: list[ModelMetrics], attribute: str, names: list[str]) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=names)
    for m in models:
        histogram: _Histogram = getattr(m, attribute)
        family.add_metric(list(m.labels), histogram.buckets(), histogram.total)
    return family


def _drift(models: list[ModelMetrics], names: list[str]) -> Iterator[Metric]:
    """The drift gauges, computed now (the monitors only collect rows as requests pass)."""
    scores = GaugeMetricFamily(
        "sh_drift_psi", "PSI of recent requests against the baseline.", labels=[*names, "direction", "tensor", "stat"]
    )
    rows = GaugeMetricFamily("sh_drift_window_rows", "Rows in the drift window.", labels=names)
    for m in models:
        if m.drift is None:
            continue
        rows.add_metric(list(m.labels), m.drift.rows)
        for score in m.drift.scores():
            scores.add_metric([*m.labels, score.direction, score.tensor, "max"], score.psi_max)
            scores.add_metric([*m.labels, score.direction, score.tensor, "mean"], score.psi_mean)
    yield scores
    yield rows
