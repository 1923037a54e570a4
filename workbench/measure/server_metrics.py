"""The server's own account of a step, from two scrapes of its Prometheus ``/metrics``.

The difference between a scrape at the start of the measured windows and one at their end gives
the mean queue time, compute time and server-side latency of the requests in between, and the
distribution of batch sizes the dynamic batcher formed. Histograms are found by name (``queue``,
``compute``, ``request_duration``, ``batch_size``; unit from the ``_seconds``/``_us``/``_ms``
suffix), so other OIP servers' metrics are read where they follow the same conventions; a target
without ``/metrics`` gives an empty breakdown.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from workbench.errors import MeasurementError

__all__ = ["Scrape", "breakdown", "metrics_text", "scrape"]

logger = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 5.0
# breakdown key -> a fragment of the histogram's name
ROLES = {"queue": "queue", "compute": "compute", "server_latency": "request_duration", "batch_size": "batch_size"}
_UNIT_TO_MS = {"_seconds": 1000.0, "_us": 0.001, "_ms": 1.0}


@dataclass
class _Histogram:
    count: float = 0.0
    total: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count


Scrape = dict[str, _Histogram]


def metrics_text(url: str, timeout_s: float = SCRAPE_TIMEOUT_S, token: str | None = None) -> str:
    """The Prometheus text at ``url/metrics``: the one scrape of a server's metrics (load steps, canary watch).

    With auth on, the harness asks for the bearer ``token`` here too (its labels name the models)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(f"{url.rstrip('/')}/metrics", headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise MeasurementError(f"{url}/metrics did not answer: {exc}") from exc
    if response.status_code != 200:
        raise MeasurementError(f"{url}/metrics answered {response.status_code}")
    return response.text


def scrape(url: str, model: str | None = None) -> Scrape:
    """Every histogram at ``url/metrics`` (series of ``model`` only, when they carry a model label).

    A target without metrics gives an empty scrape: the breakdown is extra, not the measurement."""
    try:
        text = metrics_text(url)
    except MeasurementError as exc:
        logger.debug("no metrics: %s", exc)
        return {}
    try:
        return _histograms(text, model)
    except (ValueError, KeyError, IndexError) as exc:  # not Prometheus text: no breakdown, not a failure
        logger.debug("unreadable metrics at %s: %s", url, exc)
        return {}


def _histograms(text: str, model: str | None) -> Scrape:
    found: dict[str, _Histogram] = defaultdict(_Histogram)
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        for sample in family.samples:
            if model is not None and sample.labels.get("model", model) != model:
                continue
            _add(found[family.name], sample.name, sample.labels, sample.value)
    return dict(found)


def _add(histogram: _Histogram, name: str, labels: dict[str, str], value: float) -> None:
    if name.endswith("_count"):
        histogram.count += value
    elif name.endswith("_sum"):
        histogram.total += value
    elif name.endswith("_bucket"):
        bound = float(labels["le"])
        histogram.buckets[bound] = histogram.buckets.get(bound, 0.0) + value


def breakdown(before: Scrape, after: Scrape) -> dict[str, float | dict[str, float]]:
    """Mean queue, compute and server latency (ms) and the batch size distribution between two scrapes."""
    result: dict[str, float | dict[str, float]] = {}
    for role, fragment in ROLES.items():
        name = next((n for n in after if fragment in n), None)
        if name is None:
            continue
        delta = _delta(before.get(name, _Histogram()), after[name])
        if delta.count <= 0:
            continue
        if role == "batch_size":
            result["batch_size_mean"] = round(delta.total / delta.count, 3)
            result["batch_size_distribution"] = _distribution(delta)
        else:
            result[f"{role}_ms_mean"] = round(delta.total / delta.count * _to_ms(name), 4)
            result[f"{role}_count"] = delta.count
    return result


def _delta(before: _Histogram, after: _Histogram) -> _Histogram:
    buckets = {b: after.buckets[b] - before.buckets.get(b, 0.0) for b in after.buckets}
    return _Histogram(count=after.count - before.count, total=after.total - before.total, buckets=buckets)


def _distribution(delta: _Histogram) -> dict[str, float]:
    """Per-bucket (not cumulative) counts, keyed ``<=upper bound``; empty buckets left out."""
    shares: dict[str, float] = {}
    below = 0.0
    for bound in sorted(delta.buckets):
        count = delta.buckets[bound] - below
        below = delta.buckets[bound]
        if count > 0:
            label = "+Inf" if bound == float("inf") else f"{bound:g}"
            shares[f"<={label}"] = count
    return shares


def _to_ms(name: str) -> float:
    return next((factor for suffix, factor in _UNIT_TO_MS.items() if name.endswith(suffix)), 1.0)
