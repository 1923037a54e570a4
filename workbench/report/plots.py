"""The report's plots: matplotlib on the headless Agg canvas, PNG bytes (embedded as base64 in report.html).

Each plot function returns a ``Plot`` or None when the run has nothing for it to show (no served
steps, no accuracy figure). Figures are made with ``matplotlib.figure.Figure`` directly, never
``pyplot``, so no global state or GUI backend is touched.

Example::

    for plot in run_plots(findings):
        Path(f"{plot.name}.png").write_bytes(plot.png)
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from workbench.metrics import UNTRUSTED_FLAGS, is_untrusted
from workbench.report.findings import LATENCY_LADDER, Findings

__all__ = ["Plot", "run_plots"]

DPI = 100
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


@dataclass(frozen=True)
class Plot:
    """One PNG and what it shows."""

    name: str
    title: str
    caption: str
    png: bytes


def run_plots(findings: Findings) -> list[Plot]:
    """Every plot the run has data for, in report order."""
    makers: tuple[Callable[[Findings], Plot | None], ...] = (
        served_curves,
        latency_ladder,
        accuracy_vs_latency,
        served_breakdown,
        inprocess_throughput,
    )
    return [plot for plot in (make(findings) for make in makers) if plot is not None]


def _figure(width_in: float = 8.0, height_in: float = 4.2) -> Figure:
    figure = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _colors(findings: Findings) -> dict[str, str]:
    """One color per variant, the same in every plot (the results table's order)."""
    variants = dict.fromkeys(str(v) for v in findings.frame.get("variant", []))
    return {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(variants)}


def _bound_line(axes: Axes, findings: Findings, column: str, *, vertical: bool = False) -> None:
    bound = findings.inputs.constraints.get(column)
    if bound is None or bound.max is None:
        return
    draw = axes.axvline if vertical else axes.axhline
    draw(bound.max, color="#d62728", linestyle="--", linewidth=1, label=f"{column} ≤ {bound.max:g}")


# ----------------------------------------------------------------------------------------------------- served


def _served_latency_column(rows: pd.DataFrame) -> str:
    for key in ("p99", "p95", "p90"):
        if rows[f"latency_ms_{key}"].notna().any():
            return f"latency_ms_{key}"
    return "latency_ms_p50"


def served_curves(findings: Findings) -> Plot | None:
    """Throughput against tail latency, one curve per variant through its load steps."""
    rows = findings.served
    if rows.empty:
        return None
    latency = _served_latency_column(rows)
    figure = _figure()
    axes = figure.add_subplot()
    colors = _colors(findings)
    for variant, steps in rows.groupby("variant", sort=False):
        steps = steps.sort_values(["offered_rps", "concurrency", "throughput_rps"], na_position="last")
        axes.plot(steps["throughput_rps"], steps[latency], marker="o", color=colors[str(variant)], label=str(variant))
        for _, step in steps.iterrows():
            axes.annotate(str(step["case"]), (step["throughput_rps"], step[latency]), fontsize=7, alpha=0.7,
                          xytext=(4, 4), textcoords="offset points")  # fmt: skip
        bad = steps[steps["flags"].map(is_untrusted)]
        axes.scatter(bad["throughput_rps"], bad[latency], s=120, facecolors="none", edgecolors="#d62728", zorder=3)
    _bound_line(axes, findings, latency)
    axes.set(xlabel="throughput (requests/s)", ylabel=f"{latency.removeprefix('latency_ms_')} latency (ms)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    caption = (
        f"Each point is a load step (labelled with its case); circled points were flagged "
        f"{' or '.join(sorted(UNTRUSTED_FLAGS))} and are not trusted."
    )
    if latency in findings.inputs.constraints:
        caption += " The dashed line is the latency bound."
    return Plot("served_curves", f"Throughput vs {latency.removeprefix('latency_ms_')} latency", caption, _png(figure))


def served_breakdown(findings: Findings) -> Plot | None:
    """Where served time goes (queue vs compute) and the batch sizes the server formed, per step."""
    rows = findings.served
    if rows.empty or rows[["server_queue_ms_mean", "server_compute_ms_mean"]].isna().all().all():
        return None
    figure = _figure(9.0, 4.2)
    left, right = figure.subplots(1, 2, width_ratios=(3, 2))
    labels = [f"{r['variant']}\n{r['case']}" for _, r in rows.iterrows()]
    queue = rows["server_queue_ms_mean"].fillna(0.0).to_numpy()
    compute = rows["server_compute_ms_mean"].fillna(0.0).to_numpy()
    positions = range(len(labels))
    left.bar(positions, queue, color="#ff7f0e", label="queue")
    left.bar(positions, compute, bottom=queue, color="#1f77b4", label="compute")
    left.set_xticks(list(positions), labels, fontsize=7)
    left.set(ylabel="mean per request (ms)", title="server time")
    left.legend(fontsize=8)
    _batch_sizes(right, rows, findings)
    caption = "Mean queue and compute time per request as the server measured it (from /metrics); the batch sizes its dynamic batcher formed."
    return Plot("served_breakdown", "Queue time, compute time and batch sizes", caption, _png(figure))


def _batch_sizes(axes: Axes, rows: pd.DataFrame, findings: Findings) -> None:
    """Share of model calls per batch-size bucket (from load details), else the mean batch size."""
    shares = _batch_shares(rows, findings.details)
    labels = [f"{r['variant']}\n{r['case']}" for _, r in rows.iterrows()]
    if shares.empty:
        axes.bar(range(len(labels)), rows["server_batch_size_mean"].fillna(0.0), color="#2ca02c")
        axes.set(ylabel="mean batch size", title="batch size")
    else:
        bottom = pd.Series(0.0, index=shares.index)
        for i, bucket in enumerate(shares.columns):
            axes.bar(range(len(labels)), shares[bucket], bottom=bottom, label=bucket, color=PALETTE[i % len(PALETTE)])
            bottom += shares[bucket]
        axes.set(ylabel="share of model calls", title="batch size", ylim=(0, 1))
        axes.legend(fontsize=7, title="batch", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes.set_xticks(range(len(labels)), labels, fontsize=7)


def _batch_shares(rows: pd.DataFrame, details: dict[str, dict[str, Any]]) -> pd.DataFrame:
    table: list[dict[str, float]] = []
    for _, row in rows.iterrows():
        # load/<variant>.json lists the profile's load steps, each under its label: the measurement's case
        steps = {s.get("step"): s for s in details.get(str(row["variant"]), {}).get("steps", [])}
        counts = (steps.get(row["case"], {}).get("server") or {}).get("batch_size_distribution") or {}
        total = sum(counts.values())
        table.append({k: v / total for k, v in counts.items()} if total else {})
    shares = pd.DataFrame(table).fillna(0.0)
    ordered = sorted(shares.columns, key=lambda k: float(k.removeprefix("<=").replace("+Inf", "inf")))
    return shares[ordered] if len(shares.columns) else shares


# ---------------------------------------------------------------------------------------------------- figures


def latency_ladder(findings: Findings) -> Plot | None:
    """Each variant's latency percentiles (p50 … max) at the figure it was ranked on."""
    ranking = findings.ranking
    if ranking.empty:
        return None
    figure = _figure()
    axes = figure.add_subplot()
    colors = _colors(findings)
    for _, row in ranking.iterrows():
        points = [(i, row.get(f"latency_ms_{k}")) for i, k in enumerate(LATENCY_LADDER)]
        shown = [(i, float(v)) for i, v in points if v is not None and pd.notna(v)]
        axes.plot(
            [i for i, _ in shown], [v for _, v in shown], marker="o", label=_at(row), color=colors[row["variant"]]
        )
    axes.set_xticks(range(len(LATENCY_LADDER)), list(LATENCY_LADDER))  # fixed places: a missing p99 leaves a gap
    axes.set(ylabel="latency (ms, log scale)", yscale="log")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    caption = "Percentiles from raw samples; one that needs more samples than were taken is left out (p99 needs 300)."
    return Plot("latency_ladder", "Latency percentiles", caption, _png(figure))


def _at(row: pd.Series) -> str:
    where = f"case {row['case']}" if row.get("mode") == "served" else f"batch {int(row['batch_size'])}"
    return f"{row['variant']} ({where})"


def accuracy_vs_latency(findings: Findings) -> Plot | None:
    """Quality against tail latency per variant, with the Pareto front drawn through the undominated ones."""
    ranking, latency = findings.ranking, findings.latency_column
    if "accuracy" not in ranking or latency not in ranking:
        return None
    ranking = ranking[ranking[latency].notna() & ranking["accuracy"].notna()]  # too few calls leave no percentile
    if ranking.empty:
        return None
    figure = _figure()
    axes = figure.add_subplot()
    colors = _colors(findings)
    for i, (_, row) in enumerate(ranking.sort_values(latency).iterrows()):
        marker = "o" if row["feasible"] else "x"
        axes.scatter(row[latency], row["accuracy"], color=colors[row["variant"]], marker=marker, s=60, zorder=3)
        # neighbours often share an accuracy: alternate labels above and below so they do not overprint
        axes.annotate(str(row["variant"]), (row[latency], row["accuracy"]), fontsize=8, xytext=(6, 8 if i % 2 else -12),
                      textcoords="offset points")  # fmt: skip
    front = findings.front.sort_values(latency) if latency in findings.front else findings.front.iloc[0:0]
    if not front.empty:
        axes.step(front[latency], front["accuracy"], where="post", color="#333333", linewidth=1.5, zorder=2,
                  label="Pareto front")  # fmt: skip
        axes.scatter(front[latency], front["accuracy"], s=180, facecolors="none", edgecolors="#333333", zorder=2)
        axes.legend(fontsize=8)
    _bound_line(axes, findings, latency, vertical=True)
    axes.set(xlabel=f"{latency.removeprefix('latency_ms_')} latency (ms)", ylabel="accuracy")
    axes.margins(x=0.15, y=0.25)
    bound = findings.inputs.constraints.get(latency)
    right = max(float(ranking[latency].max()), bound.max if bound is not None and bound.max is not None else 0.0)
    if right > 0:  # NaN compares false too
        axes.set_xlim(0, right * 1.3)  # room on the right for the last label
    axes.grid(alpha=0.3)
    caption = "Circled points are on the Pareto front (nothing is both more accurate and faster); × marks an infeasible variant."
    return Plot("accuracy_vs_latency", "Accuracy vs latency, Pareto front", caption, _png(figure))


def inprocess_throughput(findings: Findings) -> Plot | None:
    """Items per second by batch size, per variant, with the trials' bootstrap interval."""
    rows = findings.inprocess
    if rows.empty:
        return None
    figure = _figure()
    axes = figure.add_subplot()
    variants = list(dict.fromkeys(rows["variant"]))
    batches = sorted({int(b) for b in rows["batch_size"]})
    width = 0.8 / max(len(variants), 1)
    colors = _colors(findings)
    for i, variant in enumerate(variants):
        mine = {int(r["batch_size"]): r for _, r in rows[rows["variant"] == variant].iterrows()}
        values = [float(mine[b]["throughput_items_per_s"]) if b in mine else 0.0 for b in batches]
        errors = [_ci_items(mine[b]) if b in mine else (0.0, 0.0) for b in batches]
        positions = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(batches))]
        axes.bar(positions, values, width, color=colors[variant], label=variant,
                 yerr=list(zip(*errors, strict=True)), capsize=3)  # fmt: skip
    axes.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    axes.set(ylabel="items/s")
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize=8)
    caption = (
        "In-process: the runtime called directly. Bars are the mean across trials; whiskers the bootstrap interval."
    )
    return Plot("inprocess_throughput", "In-process throughput by batch size", caption, _png(figure))


def _ci_items(row: pd.Series) -> tuple[float, float]:
    """Error bar (below, above) in items/s from the requests/s bootstrap interval."""
    low, high = row.get("throughput_rps_ci_low"), row.get("throughput_rps_ci_high")
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return 0.0, 0.0
    batch, rps = float(row["batch_size"]), float(row["throughput_rps"])
    return max(0.0, (rps - float(low)) * batch), max(0.0, (float(high) - rps) * batch)
