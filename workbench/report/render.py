"""report.md and the terminal table, from one list of formatted rows."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from workbench.report.schema import RunEnvelope, VariantRecord

SUMMARY_COLUMNS = (
    "variant",
    "status",
    "runtime",
    "MB",
    "quality",
    "drop",
    "mode",
    "batch",
    "p50 ms",
    "p99 ms",
    "± p50",
    "req/s",
    "items/s",
    "flags",
)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def summary_rows(frame: pd.DataFrame) -> list[dict[str, str]]:
    """The results table as strings, one row per variant × measurement."""
    rows = []
    for _, r in frame.iterrows():
        quality = f"{r['metric']} {_num(r['accuracy'], 4)}" if isinstance(r.get("metric"), str) else "–"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
        rows.append(
            {
                "variant": str(r["variant"]),
                "status": status,
                "runtime": str(r["runtime"]),
                "MB": _num(r.get("artifact_mb"), 2),
                "quality": quality,
                "drop": _num(r.get("accuracy_drop"), 4),
                "mode": _num(r.get("mode")),
                "batch": _num(None if pd.isna(r.get("batch_size")) else int(r["batch_size"])),
                "p50 ms": _num(r.get("latency_ms_p50")),
                "p99 ms": _num(r.get("latency_ms_p99")),
                "± p50": _num(r.get("latency_ms_p50_std"), 4),
                "req/s": _num(r.get("throughput_rps"), 1),
                "items/s": _num(r.get("throughput_items_per_s"), 1),
                "flags": str(r.get("flags") or ""),
            }
        )
    return rows


def _md_table(rows: list[dict[str, str]], columns: tuple[str, ...]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(r[c].replace("|", "\\|") for c in columns) + " |\n" for r in rows)


def _environment_lines(env: dict[str, Any]) -> list[str]:
    cpu = env.get("cpu", {})
    git = env.get("git") or {}
    libs = env.get("libraries", {})
    shown = ", ".join(f"{k} {v}" for k, v in libs.items() if v and k in {"torch", "onnxruntime", "numpy", "onnx"})
    return [
        f"- CPU: {cpu.get('model', '?')} ({cpu.get('cores_logical', '?')} logical cores)",
        f"- GPU: {', '.join(g.get('name', '?') for g in env.get('gpus', [])) or 'none'}",
        f"- Libraries: {shown or '?'}",
        f"- Git: {git.get('commit', '?')}{' (dirty)' if git.get('dirty') else ''}",
    ]


def render_markdown(envelope: RunEnvelope, frame: pd.DataFrame, records: list[VariantRecord]) -> str:
    summary = envelope.summary
    lines = [
        f"# {envelope.recipe_name} — run {envelope.run_id}",
        "",
        f"Status **{envelope.status}**, spec hash `{envelope.spec_hash}`, created {envelope.created:%Y-%m-%d %H:%M:%S} UTC.",
        "",
    ]
    if summary.get("best"):
        lines += [f"**Best: `{summary['best']}`** — {summary.get('reason', '')}", ""]
    elif summary.get("reason"):
        lines += [f"**No variant selected** — {summary['reason']}", ""]
    lines += [
        "## Results",
        "",
        _md_table(summary_rows(frame), SUMMARY_COLUMNS),
        "## Outputs against the source model",
        "",
    ]
    lines += [_diff_table(records), "## Lineage", ""]
    lines += [_lineage_lines(r) for r in records if r.lineage]
    lines += ["", "## Environment", "", *_environment_lines(envelope.environment), ""]
    return "\n".join(lines)


def _diff_table(records: list[VariantRecord]) -> str:
    rows = [
        {
            "variant": r.variant,
            "output": name,
            "max abs diff": f"{d['max_abs_diff']:.3g}",
            "max rel diff": f"{d['max_rel_diff']:.3g}",
            "NaN/Inf": str(int(d["nonfinite"])),
        }
        for r in records
        if r.quality
        for name, d in r.quality.outputs.items()
    ]
    return _md_table(rows, ("variant", "output", "max abs diff", "max rel diff", "NaN/Inf")) if rows else "–\n"


def _lineage_lines(record: VariantRecord) -> str:
    chain = " → ".join(
        f"{e['step']}({e['content_hash'][:8]}{', cached' if e.get('cached') else ''})" for e in record.lineage
    )
    return f"- `{record.variant}`: source → {chain}"
