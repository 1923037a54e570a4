"""report.html: one self-contained page (plots embedded as base64 PNG, no script, no outside request).

It carries what report.md carries, plus the plots: the chosen variant and why, the ranking, cost,
throughput-vs-latency curves, latency percentiles, accuracy vs latency with the Pareto front, the
server's queue/compute/batch-size breakdown, in-process throughput, flagged measurements, the
environment and the exact recipe. A Content-Security-Policy forbids anything but inline styles and
``data:`` images, so a page that would reach outside itself shows it as an error in the browser.

The run's own page is written once, from the run's own recipe (its price included), when it is
missing; a page at another price goes elsewhere (``out``), so a finished run is never rewritten
(see ``workbench.report.rundir``).

Example::

    path = write_report_html(RunDir(Path("reports/digits-cpu/0001-20261123T201500Z")))
    other = write_report_html(run, price_per_hour=2.0, out=Path("/tmp/digits-at-2usd.html"))
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from workbench.errors import UsageError
from workbench.report.findings import Findings, find, find_run
from workbench.report.plots import Plot, run_plots
from workbench.report.render import (
    COST_HEADER,
    DIFF_COLUMNS,
    FLAG_COLUMNS,
    POOL_COST_HEADER,
    SERVED_COLUMNS,
    SUMMARY_COLUMNS,
    Rows,
    constraint_text,
    cost_rows,
    diff_rows,
    environment_rows,
    flag_rows,
    front_rows,
    lineage_text,
    pool_cost,
    ranking_table,
    recipe_yaml,
    served_rows,
    summary_rows,
    verdict,
)
from workbench.report.rundir import HTML_FILE, RunDir, atomic_write
from workbench.report.schema import RunEnvelope, VariantRecord

__all__ = ["HTML_FILE", "render_html", "write_report_html"]

POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2330;margin:0;background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:24px 32px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 10px;border-bottom:1px solid #dde1e7;padding-bottom:4px}
.meta{color:#5b6475;margin:0}
nav{margin:14px 0 0;font-size:13px}nav a{margin-right:12px;color:#2457c5;text-decoration:none}
.verdict{background:#fff;border-left:5px solid #2ca02c;padding:12px 16px;margin:18px 0;box-shadow:0 1px 2px #0001}
.verdict.none{border-left-color:#d62728}.verdict p{margin:4px 0}
table{border-collapse:collapse;background:#fff;font-size:12.5px;box-shadow:0 1px 2px #0001;margin:6px 0}
th,td{padding:5px 9px;border-bottom:1px solid #eceff3;text-align:right;white-space:nowrap}
th{background:#eef1f5;font-weight:600;position:sticky;top:0}
td:first-child,th:first-child{text-align:left}td.text,th.text{text-align:left}td.wrap{white-space:normal;min-width:220px}
tr.best td{background:#eaf6ea}
.scroll{overflow-x:auto;max-width:100%}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:18px}
figure{margin:0;background:#fff;padding:12px;box-shadow:0 1px 2px #0001}
figure img{width:100%;height:auto;display:block}
figcaption{font-size:12.5px;color:#5b6475;margin-top:6px}figcaption b{color:#1d2330}
pre{background:#fff;padding:12px;overflow-x:auto;font-size:12px;box-shadow:0 1px 2px #0001}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;background:#fff;padding:12px;margin:0}
dt{font-weight:600}dd{margin:0;word-break:break-word}
.empty{color:#5b6475;font-style:italic}
"""
TEXT_COLUMNS = frozenset(
    {
        "variant",
        "status",
        "runtime",
        "quality",
        "mode",
        "flags",
        "flag",
        "meaning",
        "feasible",
        "at",
        "case",
        "output",
        "",
    }
)
WRAP_COLUMNS = frozenset({"status", "meaning", "feasible"})  # long free text; the rest stays on one line
SECTIONS = (
    ("summary", "Summary"),
    ("plots", "Plots"),
    ("results", "Results"),
    ("flags", "Flags"),
    ("quality", "Outputs"),
    ("environment", "Environment"),
    ("recipe", "Recipe"),
)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _table(rows: Rows, columns: Sequence[str], *, highlight: str | None = None) -> str:
    if not rows:
        return '<p class="empty">none</p>'
    css = {c: ' class="text"' if c in TEXT_COLUMNS else "" for c in columns}
    cell = {c: ' class="text wrap"' if c in WRAP_COLUMNS else css[c] for c in columns}
    head = "".join(f"<th{css[c]}>{_e(c)}</th>" for c in columns)
    marked = ' class="best"'
    body = "".join(
        f"<tr{marked if highlight and r.get('variant') == highlight else ''}>"
        + "".join(f"<td{cell[c]}>{_e(r[c])}</td>" for c in columns)
        + "</tr>"
        for r in rows
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _figure(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return (
        f'<figure id="plot-{_e(plot.name)}"><img src="data:image/png;base64,{data}" alt="{_e(plot.title)}">'
        f"<figcaption><b>{_e(plot.title)}.</b> {_e(plot.caption)}</figcaption></figure>"
    )


def _summary(envelope: RunEnvelope, findings: Findings) -> str:
    best, why = verdict(envelope, findings)
    head = f"Chosen: <strong>{_e(best)}</strong>" if best else "<strong>No variant selected</strong>"
    parts = [
        f'<div class="verdict{"" if best else " none"}"><p>{head}</p><p>{_e(why)}</p>',
        f"<p>Objective: {_e(findings.inputs.objective.describe())}; constraints: {_e(constraint_text(findings))}.</p></div>",
    ]
    columns, rows = ranking_table(findings)
    parts += ["<h3>Ranking</h3>", _table(rows, columns, highlight=best)]
    if findings.cost is not None:
        price = f"{findings.inputs.price_per_hour:g} {findings.inputs.currency}/hour"
        parts += [f"<h3>Cost per million inferences at {_e(price)}</h3>", _table(cost_rows(findings), COST_HEADER)]
    pools = pool_cost(envelope, findings)
    if pools is not None:
        parts += [f"<h3>{_e(pools.title)}</h3><p><strong>{_e(pools.verdict)}</strong></p>",
                  _table(pools.rows, POOL_COST_HEADER)]  # fmt: skip
    if not findings.front.empty:
        front_columns = ("variant", "at", findings.latency_column, "accuracy")
        parts += ["<h3>Pareto front (accuracy vs latency)</h3>", _table(front_rows(findings), front_columns)]
    return "".join(parts)


def _plots(plots: list[Plot]) -> str:
    if not plots:
        return '<p class="empty">no measurement to plot</p>'
    return '<div class="plots">' + "".join(_figure(p) for p in plots) + "</div>"


def _results(frame: pd.DataFrame, findings: Findings) -> str:
    parts = [_table(summary_rows(frame), SUMMARY_COLUMNS)]
    if not findings.served.empty:
        parts += ["<h3>Served load steps</h3>", _table(served_rows(findings), SERVED_COLUMNS)]
    return "".join(parts)


def _quality(records: list[VariantRecord]) -> str:
    lineage = "".join(f"<li><code>{_e(r.variant)}</code>: {_e(lineage_text(r))}</li>" for r in records if r.lineage)
    return _table(diff_rows(records), DIFF_COLUMNS) + "<h3>Lineage</h3>" + (f"<ul>{lineage}</ul>" if lineage else "")


def _environment(envelope: RunEnvelope) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in environment_rows(envelope.environment))
    return f"<dl>{items}</dl>"


def render_html(
    envelope: RunEnvelope, frame: pd.DataFrame, records: list[VariantRecord], *, findings: Findings | None = None
) -> str:
    """The whole page as one string."""
    found = findings or find(envelope, frame)
    title = f"{envelope.recipe_name} — run {envelope.run_id}"
    body = {
        "summary": _summary(envelope, found),
        "plots": _plots(run_plots(found)),
        "results": _results(frame, found),
        "flags": _table(flag_rows(found), FLAG_COLUMNS),
        "quality": _quality(records),
        "environment": _environment(envelope),
        "recipe": f"<details><summary>The resolved recipe (YAML)</summary><pre>{_e(recipe_yaml(envelope))}</pre></details>",
    }
    nav = "".join(f'<a href="#{key}">{_e(name)}</a>' for key, name in SECTIONS)
    sections = "".join(f'<section id="{key}"><h2>{_e(name)}</h2>{body[key]}</section>' for key, name in SECTIONS)
    meta = (
        f"status {envelope.status} · spec hash {envelope.spec_hash} · created {envelope.created:%Y-%m-%d %H:%M:%S} UTC"
        f" · workbench {envelope.workbench_version}"
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head>"
        f'<body><main><header><h1>{_e(title)}</h1><p class="meta">{_e(meta)}</p><nav>{nav}</nav></header>'
        f"{sections}</main></body></html>\n"
    )


def write_report_html(run: RunDir, *, price_per_hour: float | None = None, out: Path | None = None) -> Path:
    """Render the page from the run's own files (envelope, variants, results, load details); return its path.

    Without ``out``: the run's ``report.html``, written only when it is missing (a finished run is
    never rewritten). With ``out``: that file (replaced if there), which must lie outside the run's
    folder. ``price_per_hour`` (another price than the recipe's) needs ``out``: the run's own page
    says what the run decided, at the run's price.
    """
    if out is None and price_per_hour is not None:
        raise UsageError(
            f"{run.html_path} is the run's own page (at its recipe's price): give --out FILE for another price"
        )
    if out is None and run.html_path.exists():
        return run.html_path
    if out is not None and out.resolve().is_relative_to(run.path.resolve()):
        raise UsageError(
            f"--out {out}: inside the run's folder, and a finished run is never rewritten; write it elsewhere"
        )
    page = _render_run(run, price_per_hour)
    if out is None:
        run.write_html(page)
        return run.html_path
    atomic_write(out, page.encode(), overwrite=True)
    return out


def _render_run(run: RunDir, price_per_hour: float | None) -> str:
    findings = find_run(run, price_per_hour=price_per_hour)
    return render_html(run.read_envelope(), findings.frame, run.read_variants(), findings=findings)
