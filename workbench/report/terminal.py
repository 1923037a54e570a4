"""The results table in a terminal, readable at any width: every figure whole, every name whole or folded.

rich's Table fits a narrow console by shrinking columns and cutting cells with "…" (at 120 columns the
results table showed ``0.…`` and ``tor…``). Here the widths are decided before rich sees a table, so
rich never has to cut anything:

1. the whole table, when it fits: number columns at their full width, text columns (names, status,
   flags) folded onto more lines when they must, never narrower than their longest word;
2. otherwise one table with a row per variant (status, runtime, size, quality) and one with a row per
   measurement (variant, mode and batch repeated), each split again into parts that repeat those key
   columns while it is still too wide;
3. when that would take more than a few parts, one block of text per variant.

rich belongs to the terminal layer: this module and the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

from rich import box
from rich.cells import cell_len
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from workbench.report.render import SUMMARY_COLUMNS, Rows

# Left-aligned and allowed to fold onto more lines; every other column is a number and is never narrowed.
TEXT_COLUMNS = frozenset({"variant", "status", "runtime", "quality", "mode", "flags"})
# Columns with one value per variant, whatever the measurement: the first table when the whole does not fit.
VARIANT_COLUMNS = ("variant", "status", "runtime", "MB", "quality", "drop")
MEASUREMENT_KEY = ("variant", "mode", "batch")
# More parts than this is harder to read than one block of text per variant.
MAX_PARTS = 3
# Longer words (paths, URLs in a failure reason) may fold mid-word: they are text, not figures.
LONGEST_WHOLE_WORD = 24
_BOX = box.HEAVY_HEAD


def results_renderables(title: str, rows: Rows, *, width: int) -> list[RenderableType]:
    """The results table (``render.summary_rows``) laid out for a console ``width`` cells wide."""
    columns = tuple(SUMMARY_COLUMNS)
    if not rows:
        return [Text(title, style="bold"), Text("no measurements yet", style="dim")]
    whole = _widths(columns, rows, width)
    if whole is not None:
        return [_table(title, columns, rows, whole)]
    measurement = (*MEASUREMENT_KEY, *(c for c in columns if c not in VARIANT_COLUMNS and c not in MEASUREMENT_KEY))
    by_variant = _split(VARIANT_COLUMNS, 1, rows, width)
    by_measurement = _split(measurement, len(MEASUREMENT_KEY), rows, width)
    if by_variant is None or by_measurement is None or len(by_variant) + len(by_measurement) > MAX_PARTS:
        return [Text(title, style="bold"), *_blocks(rows, measurement, width)]
    return [
        _table(title if index == 0 else None, part, _distinct(rows, part), widths)
        for index, (part, widths) in enumerate([*by_variant, *by_measurement])
    ]


def table_width(widths: Sequence[int]) -> int:
    """Cells a table takes with these content widths: one cell of padding each side, a rule between and around."""
    return sum(widths) + 3 * len(widths) + 1


# ------------------------------------------------------------------------------------------ widths


def _natural_width(column: str, rows: Rows) -> int:
    return max(cell_len(column), *(cell_len(row[column]) for row in rows))


def _min_width(column: str, rows: Rows) -> int:
    natural = _natural_width(column, rows)
    if column not in TEXT_COLUMNS:
        return natural
    words = [cell_len(word) for text in (column, *(row[column] for row in rows)) for word in text.split()]
    return min(natural, max(1, min(max(words, default=1), LONGEST_WHOLE_WORD)))


def _widths(columns: Sequence[str], rows: Rows, width: int) -> list[int] | None:
    """Content widths that fit ``width``, text columns widened toward their natural width; None if none fit."""
    widths = [_min_width(c, rows) for c in columns]
    spare = width - table_width(widths)
    if spare < 0:
        return None
    deficits = [_natural_width(c, rows) - w for c, w in zip(columns, widths, strict=True)]
    while spare > 0 and any(deficits):  # each pass hands out at least one cell, so it ends
        wanting = [i for i, deficit in enumerate(deficits) if deficit]
        share = max(1, spare // len(wanting))
        for i in wanting:
            grant = min(share, deficits[i], spare)
            widths[i] += grant
            deficits[i] -= grant
            spare -= grant
    return widths


Part = tuple[tuple[str, ...], list[int]]


def _split(columns: Sequence[str], keys: int, rows: Rows, width: int) -> list[Part] | None:
    """Columns in parts that fit (with their widths), each repeating the ``keys`` first columns; None if one cannot."""
    key = tuple(columns[:keys])
    groups: list[tuple[str, ...]] = []
    for column in columns[keys:]:
        if groups and _widths((*key, *groups[-1], column), rows, width) is not None:
            groups[-1] = (*groups[-1], column)
        else:
            groups.append((column,))
    parts = [((*key, *group), _widths((*key, *group), rows, width)) for group in groups]
    fitted = [(part, widths) for part, widths in parts if widths is not None]
    return fitted if len(fitted) == len(parts) else None


# ------------------------------------------------------------------------------------------ render


def _table(title: str | None, columns: Sequence[str], rows: Rows, widths: Sequence[int]) -> Table:
    table = Table(title=title, header_style="bold", box=_BOX)
    for column, content_width in zip(columns, widths, strict=True):
        text = column in TEXT_COLUMNS
        # fold, never "…": a cell that must break keeps every character
        table.add_column(
            column, justify="left" if text else "right", width=content_width, no_wrap=not text, overflow="fold"
        )
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    return table


def _distinct(rows: Rows, columns: Sequence[str]) -> Rows:
    """The rows restricted to ``columns``, repeats dropped (a variant's own columns repeat per measurement)."""
    seen: dict[tuple[str, ...], dict[str, str]] = {}
    for row in rows:
        seen.setdefault(tuple(row[c] for c in columns), {c: row[c] for c in columns})
    return list(seen.values())


def _blocks(rows: Rows, measurement: Sequence[str], width: int) -> list[Text]:
    """One block per variant: its own columns, then a line (or more) per measurement; no figure is split."""
    blocks = []
    for variant, group in groupby(rows, key=lambda row: row["variant"]):
        members = list(group)
        lines = _pack(_pairs(members[0], VARIANT_COLUMNS[1:]), width, "  ", "  ")
        for row in members:
            where = [row["mode"], f"batch {row['batch']}"]
            lines += _pack([*where, *_pairs(row, measurement[len(MEASUREMENT_KEY) :])], width, "  ", "      ")
        block = Text(variant, style="bold")
        block.append("".join("\n" + line for line in lines))
        blocks.append(block)
    return blocks


def _pairs(row: dict[str, str], columns: Sequence[str]) -> list[str]:
    return [f"{column} {row[column]}" for column in columns if row.get(column)]


def _pack(pieces: Sequence[str], width: int, first_indent: str, indent: str) -> list[str]:
    """Pieces joined by " · " into lines of at most ``width`` cells, a piece never broken (one longer folds)."""
    lines: list[str] = []
    current = ""
    for piece in pieces:
        lead = indent if lines else first_indent
        joined = f"{current} · {piece}" if current else piece
        if current and cell_len(lead + joined) > width:
            lines.append(lead + current)
            current = piece
        else:
            current = joined
    if current:
        lines.append((indent if lines else first_indent) + current)
    return lines
