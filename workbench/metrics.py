"""The one table of metrics: each metric's direction (after model_analyzer's metric records), its column
name, the quality metrics, and the load engine's "untrusted" flags. ``select``, the Pareto front, the cost
table, the report and the CI gate all read it.

Example::

    higher_is_better("latency_ms.p99")   # False
    column_name("latency_ms.p99")        # "latency_ms_p99"
"""

from __future__ import annotations

from collections.abc import Iterable

from workbench.errors import UsageError

__all__ = [
    "CAUTION_FLAGS",
    "HIGHER_IS_BETTER",
    "QUALITY_METRICS",
    "UNTRUSTED_FLAGS",
    "column_name",
    "flag_set",
    "higher_is_better",
    "is_untrusted",
]

HIGHER_IS_BETTER: dict[str, bool] = {
    "throughput_rps": True,
    "throughput_items_per_s": True,
    "offered_rps": True,
    "accuracy": True,
    "cosine": True,  # the quality value again, under its metric's name, when the recipe's metric is cosine
    "accuracy_drop": False,
    "accuracy_drop_rel": False,
    "artifact_mb": False,
    "build_s": False,
    "max_abs_diff": False,
    "nonfinite": False,
    "error_rate": False,
    "throughput_rps_std": False,
    "latency_ms_p50_std": False,
    "server_queue_ms_mean": False,
    "server_compute_ms_mean": False,
    "server_server_latency_ms_mean": False,
    "server_batch_size_mean": True,  # fuller batches: more work per model call
    "server_cpu_percent_mean": False,
    "server_rss_mb_max": False,
    "generator_cpu_percent_max": False,
    "cost_per_million": False,
}
for _k in ("p50", "p90", "p95", "p99", "p999", "max", "mean"):
    HIGHER_IS_BETTER[f"latency_ms_{_k}"] = False

QUALITY_METRICS = frozenset({"accuracy", "cosine", "accuracy_drop", "accuracy_drop_rel", "max_abs_diff"})
# The load engine's own verdict that a step's figures cannot be trusted (see measure/load/engine.py).
UNTRUSTED_FLAGS = frozenset({"generator_saturated", "generator_behind"})
# Flags that keep a step's figures but call for care (shown as warnings; the gate's A/B rounds name them).
CAUTION_FLAGS = frozenset({"errors", "unsettled", "few_requests"})


def flag_set(flags: str | Iterable[str] | None) -> frozenset[str]:
    """A step's flags, whether stored as ``"a,b"`` text (results.parquet) or as a list (load/*.json)."""
    items = str(flags or "").split(",") if flags is None or isinstance(flags, str) else flags
    return frozenset(item.strip() for item in items if item and item.strip())


def is_untrusted(flags: str | Iterable[str] | None) -> bool:
    """Whether the load engine said a step's figures cannot be trusted."""
    return bool(UNTRUSTED_FLAGS & flag_set(flags))


def column_name(metric: str) -> str:
    """``latency_ms.p99`` and ``latency_ms_p99`` name the same column."""
    return metric.replace(".", "_")


def higher_is_better(metric: str) -> bool:
    """The direction of ``metric``; a metric the table does not know is a usage error."""
    try:
        return HIGHER_IS_BETTER[column_name(metric)]
    except KeyError:
        raise UsageError(f"unknown metric {metric!r}; known: {', '.join(sorted(HIGHER_IS_BETTER))}") from None
