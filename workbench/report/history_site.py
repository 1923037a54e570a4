"""The history site: a static folder a browser opens without a server or the network.

``index.html`` lists the recipes; ``<recipe>.html`` has a table of every series (points, last value,
change points with magnitude and commit range) and one plot per variant × case × metric under
``img/<recipe>/``: one line per machine, each point with its spread, change points marked (red: worse,
green: better). Each point links to its run's report through an image map (and a table under the
plot), with relative links, so the site works wherever the reports folder and it sit side by side.
Every file is written through a temp file and a rename.

Example::

    index = write_site(load_history(Path("reports")), Path("site"))
"""

from __future__ import annotations

import html
import io
import itertools
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from workbench.report.history import (
    ChangePoint,
    DetectionConfig,
    History,
    Point,
    Series,
    change_points,
    regressions_at_head,
)
from workbench.report.rundir import atomic_write

__all__ = ["INDEX_FILE", "write_site"]

INDEX_FILE = "index.html"
IMAGE_DIR = "img"
DPI = 100
FIGURE_IN = (8.0, 3.4)
POINT_RADIUS_PX = 6
PALETTE = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
WORSE, BETTER = "#d62728", "#2ca02c"
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2330;margin:0;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 32px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#5b6475;margin:0 0 12px}a{color:#2457c5}
table{border-collapse:collapse;background:#fff;font-size:12.5px;box-shadow:0 1px 2px #0001;margin:6px 0}
th,td{padding:4px 9px;border-bottom:1px solid #eceff3;text-align:left;white-space:nowrap}
th{background:#eef1f5;font-weight:600}td.num{text-align:right}
tr.worse td{background:#fdecec}.worse{color:#b3261e}.better{color:#1e7b34}
figure{background:#fff;margin:14px 0;padding:10px;box-shadow:0 1px 2px #0001}
figure img{max-width:100%;height:auto;display:block}figcaption{font-size:12.5px;color:#5b6475}
details{margin:6px 0}summary{cursor:pointer;font-size:12.5px}
"""


@dataclass(frozen=True)
class _Analysed:
    """A series with its change points and the ones the newest point still sits behind."""

    series: Series
    changes: tuple[ChangePoint, ...]
    at_head: tuple[ChangePoint, ...]


def write_site(history: History, out: Path, *, config: DetectionConfig | None = None) -> Path:
    """Write ``out/index.html`` and one page (with its plots) per recipe; return the index's path."""
    out.mkdir(parents=True, exist_ok=True)
    analysed = [_analyse(series, config) for series in history.series]
    by_recipe: dict[str, list[_Analysed]] = defaultdict(list)
    for item in analysed:
        by_recipe[item.series.key.recipe].append(item)
    for recipe, items in by_recipe.items():
        _write(out / _page_name(recipe), _recipe_page(recipe, items, out))
    _write(out / INDEX_FILE, _index_page(by_recipe, history.skipped))
    return out / INDEX_FILE


def _analyse(series: Series, config: DetectionConfig | None) -> _Analysed:
    return _Analysed(series, tuple(change_points(series, config)), tuple(regressions_at_head(series, config)))


def _write(path: Path, text: str | bytes) -> None:
    atomic_write(path, text.encode() if isinstance(text, str) else text, overwrite=True)


# ---------------------------------------------------------------------------------------------------------- pages


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
        f"<body><main>{body}</main></body></html>\n"
    )


def _index_page(by_recipe: dict[str, list[_Analysed]], skipped: Sequence[str]) -> str:
    rows = "".join(_index_row(recipe, items) for recipe, items in sorted(by_recipe.items()))
    table = (
        "<table><thead><tr><th>recipe</th><th>series</th><th>runs</th><th>machines</th><th>change points</th>"
        f"<th>worse at head</th></tr></thead><tbody>{rows}</tbody></table>"
        if rows
        else "<p>No runs with results yet: <code>workbench run RECIPE</code> writes one.</p>"
    )
    notes = "".join(f"<li>{_e(line)}</li>" for line in skipped)
    skipped_html = f"<h2>Runs that could not be read</h2><ul>{notes}</ul>" if notes else ""
    return _page("Performance history", f"<h1>Performance history</h1>{table}{skipped_html}")


def _index_row(recipe: str, items: list[_Analysed]) -> str:
    runs = {p.run_id for item in items for p in item.series.points}
    machines = sorted({item.series.hardware_label for item in items})
    changes = sum(len(item.changes) for item in items)
    worse = sum(bool(item.at_head) for item in items)
    css = ' class="worse"' if worse else ""
    return (
        f'<tr{css}><td><a href="{_e(_page_name(recipe))}">{_e(recipe)}</a></td><td class="num">{len(items)}</td>'
        f'<td class="num">{len(runs)}</td><td>{_e("; ".join(machines))}</td><td class="num">{changes}</td>'
        f'<td class="num">{worse}</td></tr>'
    )


def _recipe_page(recipe: str, items: list[_Analysed], out: Path) -> str:
    machines = "; ".join(f"{key} = {label}" for key, label in sorted(_machines(items).items()))
    parts = [
        f'<p><a href="{INDEX_FILE}">← all recipes</a></p><h1>{_e(recipe)}</h1>',
        f'<p class="meta">machines: {_e(machines)}</p>',
        _series_table(items),
    ]
    groups: dict[tuple[str, str, str], list[_Analysed]] = defaultdict(list)
    for item in items:
        key = item.series.key
        groups[(key.variant, key.case, key.metric)].append(item)
    for (variant, case, metric), members in sorted(groups.items()):
        parts.append(_figure(recipe, f"{variant} · {case} · {metric}", members, out))
    return _page(f"{recipe} · history", "".join(parts))


def _machines(items: list[_Analysed]) -> dict[str, str]:
    return {item.series.key.hardware: item.series.hardware_label for item in items}


def _series_table(items: list[_Analysed]) -> str:
    head = "".join(
        f"<th>{c}</th>"
        for c in ("variant", "case", "metric", "machine", "points", "last", "change points (commit range)")
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(map(_series_row, items))}</tbody></table>"


def _series_row(item: _Analysed) -> str:
    key, last = item.series.key, item.series.points[-1]
    changes = ", ".join(_change_html(c) for c in item.changes) or "none"
    css = ' class="worse"' if item.at_head else ""
    cells = (_e(key.variant), _e(key.case), _e(key.metric), _e(key.hardware))
    return (
        f"<tr{css}>{''.join(f'<td>{c}</td>' for c in cells)}<td class='num'>{len(item.series.points)}</td>"
        f"<td class='num'>{last.value:.4g}</td><td>{changes}</td></tr>"
    )


def _change_html(change: ChangePoint) -> str:
    css = "worse" if change.worse else "better"
    return f'<span class="{css}">{_e(change.describe())}</span>'


# -------------------------------------------------------------------------------------------------------- figures


def _figure(recipe: str, title: str, members: list[_Analysed], out: Path) -> str:
    """One plot (a PNG file), its image map of links to the runs' reports, and the points as a table."""
    image = Path(IMAGE_DIR) / _slug(recipe) / f"{_slug(title)}.png"
    png, spots = _plot(title, members)
    _write(out / image, png)
    name = f"map-{_slug(title)}"
    areas = "".join(_area(x, y, point, point.report, out) for x, y, point in spots if point.report is not None)
    return (
        f'<figure><img src="{_e(image.as_posix())}" alt="{_e(title)}" usemap="#{name}" '
        f'width="{int(FIGURE_IN[0] * DPI)}" height="{int(FIGURE_IN[1] * DPI)}">'
        f'<map name="{name}">{areas}</map><figcaption><b>{_e(title)}</b>. One line per machine; bars: each '
        "run's spread; dashed lines: change points (red worse, green better). Click a point for its run's "
        f"report.</figcaption>{_points_table(members, out)}</figure>"
    )


def _area(x_px: float, y_px: float, point: Point, report: Path, out: Path) -> str:
    label = f"{point.run_id} ({point.short_commit}): {point.value:.4g}"
    return (
        f'<area shape="circle" coords="{x_px:.0f},{y_px:.0f},{POINT_RADIUS_PX}" '
        f'href="{_e(_link(report, out))}" alt="{_e(label)}" title="{_e(label)}">'
    )


def _points_table(members: list[_Analysed], out: Path) -> str:
    rows = []
    for item in members:
        for point in reversed(item.series.points):
            report = f'<a href="{_e(_link(point.report, out))}">report</a>' if point.report is not None else "–"
            tag = " (baseline)" if point.baseline else ""
            rows.append(
                f"<tr><td>{_e(point.run_id)}{tag}</td><td>{_e(point.short_commit)}</td>"
                f"<td>{_e(item.series.key.hardware)}</td><td class='num'>{point.value:.4g}</td><td>{report}</td></tr>"
            )
    head = "<tr><th>run</th><th>commit</th><th>machine</th><th>value</th><th>report</th></tr>"
    return f"<details><summary>points</summary><table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table></details>"


def _link(report: Path, out: Path) -> str:
    return Path(os.path.relpath(report.resolve(), out.resolve())).as_posix()


def _plot(title: str, members: list[_Analysed]) -> tuple[bytes, list[tuple[float, float, Point]]]:
    """The PNG, and where each point landed in it (pixels from the top left) for the image map."""
    figure = Figure(figsize=FIGURE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for colour, item in zip(_colours(len(members)), members, strict=False):
        _draw_series(axes, item, colour)
    axes.set_title(title, fontsize=10)
    axes.set_ylabel(members[0].series.key.metric)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    axes.xaxis.set_major_formatter(_date_formatter(axes))
    figure.canvas.draw()  # settle the constrained layout before reading pixel positions
    spots = [spot for item in members for spot in _spots(axes, figure, item.series)]
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue(), spots


def _colours(count: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(count)]


def _draw_series(axes: Axes, item: _Analysed, colour: str) -> None:
    points = item.series.points
    times = [_days(p.created) for p in points]
    values = [p.value for p in points]
    # max(0, …): a bootstrap interval of a median need not contain the point's own (mean) figure.
    below = [max(0.0, p.value - p.low) if p.low is not None else 0.0 for p in points]
    above = [max(0.0, p.high - p.value) if p.high is not None else 0.0 for p in points]
    label = f"{item.series.key.hardware}: {item.series.hardware_label}"
    axes.errorbar(times, values, yerr=[below, above], fmt="-o", color=colour, markersize=4, capsize=2, label=label)
    edges = [0, *(change.index for change in item.changes), len(points)]
    for start, end in itertools.pairwise(edges):  # each segment's median: what a change point compares
        median = float(np.median(values[start:end]))
        axes.hlines(median, times[start], times[end - 1], color=colour, linestyle=":", linewidth=1, alpha=0.8)
    for change in item.changes:
        _mark_change(axes, change, (times[change.index - 1] + times[change.index]) / 2)


def _mark_change(axes: Axes, change: ChangePoint, at: float) -> None:
    colour = WORSE if change.worse else BETTER
    axes.axvline(at, color=colour, linestyle="--", linewidth=1.2)
    axes.annotate(
        change.describe().split(" (")[0], (at, 0.97), xycoords=("data", "axes fraction"),
        xytext=(3, 0), textcoords="offset points", fontsize=7, color=colour, ha="left", va="top",
    )  # fmt: skip


def _spots(axes: Axes, figure: Figure, series: Series) -> list[tuple[float, float, Point]]:
    height_px = figure.bbox.height
    spots = []
    for point in series.points:
        x_px, y_px = axes.transData.transform((_days(point.created), point.value))
        spots.append((float(x_px), float(height_px - y_px), point))
    return spots


def _days(moment: datetime) -> float:
    """Matplotlib's date axis unit (days since its epoch)."""
    return float(mdates.date2num(moment))  # type: ignore[no-untyped-call]


def _date_formatter(axes: Axes) -> mdates.ConciseDateFormatter:
    return mdates.ConciseDateFormatter(axes.xaxis.get_major_locator())  # type: ignore[no-untyped-call]


def _page_name(recipe: str) -> str:
    slug = _slug(recipe)
    return f"{slug}_.html" if f"{slug}.html" == INDEX_FILE else f"{slug}.html"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "_"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
