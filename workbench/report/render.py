"""report.md and the terminal table, from one set of formatted rows (report.html uses the same rows)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import yaml

from workbench.decide.cost import pool_comparison, pool_prices
from workbench.decide.select import bound_text
from workbench.report.findings import FLAG_MEANINGS, Findings, find
from workbench.report.schema import RunEnvelope, VariantRecord

Rows = list[dict[str, str]]

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
SERVED_COLUMNS = (
    "variant",
    "case",
    "users",
    "offered rps",
    "req/s",
    "± req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "queue ms",
    "compute ms",
    "batch",
    "server CPU %",
    "gen. CPU %",
    "flags",
)
COST_HEADER = ("variant", "at", "items/s under SLA", "p50 ms", "cost per 1M", "")
POOL_COST_HEADER = ("pool", "variant", "at", "items/s", "p99 ms", "cost per 1M", "feasible", "")
FLAG_COLUMNS = ("variant", "mode", "at", "flag", "meaning")
DIFF_COLUMNS = ("variant", "output", "max abs diff", "max rel diff", "NaN/Inf")


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _get(row: pd.Series, column: str) -> Any:
    """A cell, or None when the column is absent (an older results.parquet) or empty."""
    value = row.get(column)
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value


def summary_rows(frame: pd.DataFrame) -> Rows:
    """The results table as strings, one row per variant × measurement."""
    rows = []
    for _, r in frame.iterrows():
        quality = f"{r['metric']} {_num(_get(r, 'accuracy'), 4)}" if isinstance(r.get("metric"), str) else "–"
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
        rows.append(
            {
                "variant": str(r["variant"]),
                "status": status,
                "runtime": str(r["runtime"]),
                "MB": _num(_get(r, "artifact_mb"), 2),
                "quality": quality,
                "drop": _num(_get(r, "accuracy_drop"), 4),
                "mode": _mode(r),
                "batch": _num(None if _get(r, "batch_size") is None else int(r["batch_size"])),
                "p50 ms": _num(_get(r, "latency_ms_p50")),
                "p99 ms": _num(_get(r, "latency_ms_p99")),
                "± p50": _num(_get(r, "latency_ms_p50_std"), 4),
                "req/s": _num(_get(r, "throughput_rps"), 1),
                "items/s": _num(_get(r, "throughput_items_per_s"), 1),
                "flags": str(_get(r, "flags") or ""),
            }
        )
    return rows


def _mode(row: pd.Series) -> str:
    """``inprocess``, or the served step's load: ``served 4 users``, ``served 200 rps``."""
    mode = _get(row, "mode")
    if mode != "served":
        return _num(mode)
    if (users := _get(row, "concurrency")) is not None:
        return f"served {int(users)} user{'s' if int(users) != 1 else ''}"
    if (rate := _get(row, "offered_rps")) is not None:
        return f"served {float(rate):,.0f} rps"
    return f"served {_get(row, 'case')}"


def served_rows(findings: Findings) -> Rows:
    """One row per served load step: the offered load, what came back, and the server's own breakdown."""
    return [
        {
            "variant": str(r["variant"]),
            "case": str(r["case"]),
            "users": _num(None if _get(r, "concurrency") is None else int(r["concurrency"])),
            "offered rps": _num(_get(r, "offered_rps"), 1),
            "req/s": _num(_get(r, "throughput_rps"), 1),
            "± req/s": _num(_get(r, "throughput_rps_std"), 1),
            "p50 ms": _num(_get(r, "latency_ms_p50")),
            "p99 ms": _num(_get(r, "latency_ms_p99")),
            "errors": "–" if _get(r, "error_rate") is None else f"{float(r['error_rate']):.2%}",
            "queue ms": _num(_get(r, "server_queue_ms_mean")),
            "compute ms": _num(_get(r, "server_compute_ms_mean")),
            "batch": _num(_get(r, "server_batch_size_mean"), 2),
            "server CPU %": _num(_get(r, "server_cpu_percent_mean"), 0),
            "gen. CPU %": _num(_get(r, "generator_cpu_percent_max"), 0),
            "flags": str(_get(r, "flags") or ""),
        }
        for _, r in findings.served.iterrows()
    ]


def _at(row: pd.Series) -> str:
    return f"case {row['case']}" if row.get("mode") == "served" else f"batch {int(row['batch_size'])}"


def ranking_table(findings: Findings) -> tuple[tuple[str, ...], Rows]:
    """Every measured variant's figure, best first, with why an infeasible one is out."""
    objective = findings.inputs.objective
    metrics = list(dict.fromkeys([t.metric for t in objective.terms]))
    latency = findings.latency_column
    extra = [m for m in dict.fromkeys(("latency_ms_p50", latency, "accuracy")) if m not in metrics]
    columns = ("rank", "variant", "at", *metrics, *extra, "feasible")
    rows = []
    for _, r in findings.ranking.iterrows():
        row = {"rank": _num(None if _get(r, "rank") is None else int(r["rank"])), "variant": str(r["variant"])}
        row["at"] = _at(r)
        row.update({m: _num(_get(r, m), 4 if m == "accuracy" else 3) for m in (*metrics, *extra)})
        row["feasible"] = "yes" if r["feasible"] else f"no: {r['violations']}"
        rows.append(row)
    return columns, rows


def cost_rows(findings: Findings) -> Rows:
    """Cost per million inferences per feasible variant, the cheapest first."""
    if findings.cost is None:
        return []
    currency = findings.inputs.currency
    rows = []
    for _, r in findings.cost.iterrows():
        marks = [word for word in ("cheapest", "fastest") if bool(r[word])]
        cost = _get(r, "cost_per_million")
        rows.append(
            {
                "variant": str(r["variant"]),
                "at": _at(r),
                "items/s under SLA": _num(_get(r, "throughput_items_per_s"), 1),
                "p50 ms": _num(_get(r, "latency_ms_p50")),
                "cost per 1M": "–" if cost is None else f"{float(cost):.4g} {currency}",
                "": ", ".join(marks),
            }
        )
    return rows


@dataclass(frozen=True)
class PoolCost:
    """A cluster run over priced pools: each pool × variant at its pool's price, and what is cheapest."""

    title: str  # "Cost per million inferences per pool (cpu-small 0.1, cpu-large 0.4 USD/hour)"
    verdict: str  # the cheapest feasible pool and variant, named; or that none meets the constraints
    rows: Rows


def pool_cost(envelope: RunEnvelope, findings: Findings) -> PoolCost | None:
    """The per-pool cost table of a cluster run with priced pools; None for any other run."""
    prices = pool_prices(envelope.recipe)
    inputs = findings.inputs
    table = pool_comparison(findings.frame, inputs.constraints, prices, batch_size=inputs.objective.batch_size)
    if table.empty:
        return None
    listed = ", ".join(f"{pool} {price:g}" for pool, price in prices.items())
    best = table[table["cheapest"]]
    verdict = (
        f"Cheapest feasible: {best.iloc[0]['variant']} on pool {best.iloc[0]['pool']}"
        if not best.empty
        else "No pool and variant meet the constraints."
    )
    rows = [_pool_cost_row(r, inputs.currency) for _, r in table.iterrows()]
    return PoolCost(f"Cost per million inferences per pool ({listed} {inputs.currency}/hour)", verdict, rows)


def pool_cost_section(envelope: RunEnvelope, findings: Findings) -> list[str]:
    """report.md's section for ``pool_cost`` (nothing for a run without priced pools)."""
    found = pool_cost(envelope, findings)
    if found is None:
        return []
    return _md_section(found.title, f"**{found.verdict}**\n\n{_md_table(found.rows, POOL_COST_HEADER)}")


def _pool_cost_row(r: pd.Series, currency: str) -> dict[str, str]:
    cost = _get(r, "cost_per_million")
    return {
        "pool": str(r["pool"]),
        "variant": str(r["variant"]),
        "at": _at(r),
        "items/s": _num(_get(r, "throughput_items_per_s"), 1),
        "p99 ms": _num(_get(r, "latency_ms_p99")),
        "cost per 1M": "–" if cost is None else f"{float(cost):.4g} {currency}",
        "feasible": "yes" if r["feasible"] else f"no: {r['violations']}",
        "": "cheapest" if r["cheapest"] else "",
    }


def front_rows(findings: Findings) -> Rows:
    latency = findings.latency_column
    return [
        {
            "variant": str(r["variant"]),
            "at": _at(r),
            latency: _num(_get(r, latency)),
            "accuracy": _num(_get(r, "accuracy"), 4),
        }
        for _, r in findings.front.sort_values(latency).iterrows()
    ]


def flag_rows(findings: Findings) -> Rows:
    """One row per flag raised on a measurement, with what it means."""
    rows = []
    for _, r in findings.flagged.iterrows():
        for flag in str(r["flags"]).split(","):
            meaning = FLAG_MEANINGS.get(flag, "")
            rows.append(
                {
                    "variant": str(r["variant"]),
                    "mode": str(r.get("mode")),
                    "at": _at(r),
                    "flag": flag,
                    "meaning": meaning,
                }
            )
    return rows


def diff_rows(records: list[VariantRecord]) -> Rows:
    """How far each variant's outputs moved from the source model's."""
    return [
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


def lineage_text(record: VariantRecord) -> str:
    """``source → export.onnx(1a2b3c4d) → quantize.ort_dynamic(…, cached)``."""
    return "source → " + " → ".join(
        f"{e.step}({e.content_hash[:8]}{', cached' if e.cached else ''})" for e in record.lineage
    )


def environment_rows(env: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, value) pairs: CPU, GPU, libraries, threads, git."""
    cpu = env.get("cpu", {})
    git = env.get("git") or {}
    libs = env.get("libraries", {})
    threads = env.get("threads", {})
    python = env.get("python", {})
    return [
        ("CPU", f"{cpu.get('model', '?')} ({cpu.get('cores_logical', '?')} logical cores)"),
        ("ISA", ", ".join(cpu.get("isa", [])) or "?"),
        ("GPU", ", ".join(g.get("name", "?") for g in env.get("gpus", [])) or "none"),
        ("Python", str(python.get("version", "?"))),
        ("Libraries", ", ".join(f"{k} {v}" for k, v in libs.items() if v) or "?"),
        ("Threads", ", ".join(f"{k}={v}" for k, v in threads.items() if v is not None) or "?"),
        ("Git", f"{git.get('commit', '?')}{' (dirty)' if git.get('dirty') else ''}"),
    ]


def recipe_yaml(envelope: RunEnvelope) -> str:
    """The exact resolved recipe the run was made from."""
    return yaml.safe_dump(envelope.recipe, sort_keys=False, allow_unicode=True)


def verdict(envelope: RunEnvelope, findings: Findings) -> tuple[str | None, str]:
    """(the chosen variant or None, why): the run's own summary first, else the findings' selection."""
    summary = envelope.summary
    if summary.get("best"):
        return str(summary["best"]), str(summary.get("reason", ""))
    if findings.selection is not None:
        return findings.selection.variant, findings.selection.reason
    return None, findings.why_none or str(summary.get("reason") or "no variant was measured")


def constraint_text(findings: Findings) -> str:
    bounds = findings.inputs.constraints
    return ", ".join(f"{k} {bound_text(b)}" for k, b in bounds.items()) or "none"


# ---------------------------------------------------------------------------------------------------- markdown


def _md_table(rows: Rows, columns: tuple[str, ...]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(r[c].replace("|", "\\|") for c in columns) + " |\n" for r in rows)


def _md_section(title: str, body: str) -> list[str]:
    return [f"## {title}", "", body]


def render_markdown(
    envelope: RunEnvelope,
    frame: pd.DataFrame,
    records: list[VariantRecord],
    *,
    findings: Findings | None = None,
) -> str:
    """report.md: the same tables as report.html, for pull requests and terminals."""
    found = findings or find(envelope, frame)
    best, why = verdict(envelope, found)
    lines = [
        f"# {envelope.recipe_name} — run {envelope.run_id}",
        "",
        f"Status **{envelope.status}**, spec hash `{envelope.spec_hash}`, created {envelope.created:%Y-%m-%d %H:%M:%S} UTC.",
        "",
        f"**Best: `{best}`** — {why}" if best else f"**No variant selected** — {why}",
        "",
        f"Objective: {found.inputs.objective.describe()}; constraints: {constraint_text(found)}.",
        "",
    ]
    columns, ranked = ranking_table(found)
    lines += _md_section("Ranking", _md_table(ranked, columns) if ranked else "–\n")
    if found.cost is not None:
        price = f"at {found.inputs.price_per_hour:g} {found.inputs.currency}/hour"
        lines += _md_section(
            f"Cost per million inferences ({price})", _md_table(cost_rows(found), COST_HEADER) or "–\n"
        )
    lines += pool_cost_section(envelope, found)
    if not found.front.empty:
        lines += _md_section(
            "Pareto front (accuracy vs latency)",
            _md_table(front_rows(found), ("variant", "at", found.latency_column, "accuracy")),
        )
    lines += _md_section("Results", _md_table(summary_rows(frame), SUMMARY_COLUMNS))
    if not found.served.empty:
        lines += _md_section("Served load steps", _md_table(served_rows(found), SERVED_COLUMNS))
    flags = flag_rows(found)
    if flags:
        lines += _md_section("Flagged measurements", _md_table(flags, FLAG_COLUMNS))
    diffs = diff_rows(records)
    lines += _md_section("Outputs against the source model", _md_table(diffs, DIFF_COLUMNS) if diffs else "–\n")
    lines += ["## Lineage", "", *(f"- `{r.variant}`: {lineage_text(r)}" for r in records if r.lineage), ""]
    lines += ["## Environment", "", *(f"- {k}: {v}" for k, v in environment_rows(envelope.environment)), ""]
    lines += ["## Recipe", "", "```yaml", recipe_yaml(envelope).rstrip(), "```", ""]
    return "\n".join(lines)
