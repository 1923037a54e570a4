"""Variant records → one flat table: a row per variant × measurement (``results.parquet``).

A variant that was rejected or failed is still a row, with its status and reason, so nothing a
sweep tried disappears from the report.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from workbench.report.schema import Measurement, VariantRecord

# Quality metrics that also get a column of their own name, so `constraints: {cosine: {min: 0.98}}` reads.
NAMED_QUALITY = frozenset({"cosine"})
LATENCY_KEYS = ("p50", "p90", "p95", "p99", "p999", "max", "mean")
SERVER_KEYS = ("queue_ms_mean", "compute_ms_mean", "server_latency_ms_mean", "batch_size_mean")
RESOURCE_KEYS = ("server_cpu_percent_mean", "server_rss_mb_max", "generator_cpu_percent_max")


def _variant_columns(run_id: str, record: VariantRecord) -> dict[str, Any]:
    quality = record.quality
    diffs = quality.outputs.values() if quality else []
    return {
        "run_id": run_id,
        "variant": record.variant,
        "pipeline": record.pipeline,
        "is_baseline": record.is_baseline,
        "runtime": record.runtime,
        "serving": record.serving_label,
        "status": record.status,
        "reason": record.reason,
        "artifact_format": record.artifact.format if record.artifact else None,
        "artifact_mb": round(record.artifact.size_bytes / 1e6, 3) if record.artifact else None,
        "build_s": round(record.build_s, 3),
        "metric": quality.metric if quality else None,
        "accuracy": quality.value if quality else None,  # the primary quality metric, whatever it is
        **({quality.metric: quality.value} if quality and quality.metric in NAMED_QUALITY else {}),
        "accuracy_drop": quality.drop if quality else None,
        "accuracy_drop_rel": quality.drop_rel if quality else None,
        "max_abs_diff": max((d["max_abs_diff"] for d in diffs), default=None),
        "nonfinite": sum(int(d["nonfinite"]) for d in diffs) if quality else None,
        **_placement_columns(record),
    }


def _placement_columns(record: VariantRecord) -> dict[str, Any]:
    """Where a cluster run measured the row: its pool and its node's hardware (nothing for a local run)."""
    if record.pool is None and record.environment is None:
        return {}
    from workbench.report.history import hardware_fingerprint, hardware_label  # cluster runs only pay for it

    found = record.environment or {}
    return {
        "pool": record.pool,
        "attempts": record.attempts,
        "hardware": hardware_fingerprint(found) if found else None,
        "hardware_label": hardware_label(found) if found else None,
        "node": (found.get("platform") or {}).get("hostname"),
    }


def _measurement_columns(m: Measurement) -> dict[str, Any]:
    ci = m.throughput_rps_ci or (None, None)
    columns: dict[str, Any] = {
        "mode": m.mode,
        "case": m.case,
        "batch_size": m.batch_size,
        "concurrency": m.concurrency,
        "iterations": m.iterations,
        "trials": m.trials,
    }
    columns.update({f"latency_ms_{k}": m.latency_ms.get(k) for k in LATENCY_KEYS})
    columns.update(
        latency_ms_p50_std=m.latency_ms_p50_std,
        throughput_rps=m.throughput_rps,
        throughput_rps_std=m.throughput_rps_std,
        throughput_rps_ci_low=ci[0],
        throughput_rps_ci_high=ci[1],
        throughput_items_per_s=m.throughput_items_per_s,
        flags=",".join(m.flags),
        offered_rps=m.offered_rps,
        error_rate=m.error_rate,
    )
    columns.update({f"server_{k}": m.server.get(k) for k in SERVER_KEYS})
    columns.update({k: m.resources.get(k) for k in RESOURCE_KEYS})
    return columns


def records_to_frame(run_id: str, records: list[VariantRecord]) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for record in records:
        base = _variant_columns(run_id, record)
        if not record.measurements:
            rows.append({**base, "mode": None, "case": None, "batch_size": None})
        rows.extend({**base, **_measurement_columns(m)} for m in record.measurements)
    return pd.DataFrame(rows)
