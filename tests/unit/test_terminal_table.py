"""The results table in a terminal: at any width every figure is printed whole, nothing is cut with "…"."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.cells import cell_len
from rich.console import Console

from workbench import cli
from workbench.report.render import SUMMARY_COLUMNS, Rows, summary_rows
from workbench.report.terminal import TEXT_COLUMNS, results_renderables

GOLDEN = Path(__file__).parents[1] / "report" / "golden" / "v1" / "digits-cpu" / "0001-20261123T234441Z"
TITLE = "digits-cpu · 0001-20261123T234441Z · complete"
WIDTHS = (200, 120, 100, 80, 60, 40)


def golden_rows() -> Rows:
    return summary_rows(pd.read_parquet(GOLDEN / "results.parquet"))


def wide_rows() -> Rows:
    """The golden rows plus what makes a table wide: a long grid variant id, a failure, big figures."""
    long = {**golden_rows()[0], "variant": "ort-int8-static@intra_op_threads=4,max_batch_size=32"}
    big = {**long, "req/s": "1,234,567", "items/s": "39,506,144", "p99 ms": "12,345", "flags": "generator_saturated"}
    failed = dict.fromkeys(SUMMARY_COLUMNS, "–") | {
        "variant": "torch-int8",
        "status": "failed: BuildError: quantize.torch_dynamic needs a Linear layer, found none in /tmp/cache/x",
        "runtime": "torch",
        "mode": "",
        "batch": "–",
        "flags": "",
    }
    return [*golden_rows(), long, big, failed]


def render(rows: Rows, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    for part in results_renderables(TITLE, rows, width=width):
        console.print(part)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def tokens(output: str) -> set[str]:
    return set(re.split(r"[\s│┃]+", output))


def figures(rows: Rows) -> set[str]:
    """Every number in the rows, as printed: the number columns, and the value inside ``quality``."""
    cells = {row[c] for row in rows for c in SUMMARY_COLUMNS if c not in TEXT_COLUMNS}
    cells |= {row["quality"].split()[-1] for row in rows}
    return {cell for cell in cells if re.fullmatch(r"[\d,.]+", cell)}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("make_rows", [golden_rows, wide_rows], ids=["golden", "wide"])
def test_every_figure_is_printed_whole(make_rows: object, width: int) -> None:
    rows = make_rows()  # type: ignore[operator]

    output = render(rows, width)

    assert "…" not in output
    assert figures(rows) <= tokens(output), figures(rows) - tokens(output)
    assert max(cell_len(line) for line in output.splitlines()) <= width


@pytest.mark.parametrize("width", WIDTHS)
def test_names_are_whole_or_folded_never_cut(width: int) -> None:
    output = render(wide_rows(), width)

    for name in ("torch-eager", "ort-fp32", "onnxruntime", "unsettled", "generator_saturated"):
        assert name in tokens(output), name
    # A folded name reads whole down its column (or, in blocks, across its lines).
    first_column = "".join(line.split("│")[1].strip() for line in output.splitlines() if line.startswith("│"))
    flat = re.sub(r"\s+", "", output)
    assert "ort-int8-static@intra_op_threads=4,max_batch_size=32" in first_column + flat


def test_a_table_that_fits_is_one_table() -> None:
    output = render(golden_rows(), 200)

    assert output.count("variant") == 1 and output.count("torch-eager") == 4


def test_a_narrower_console_repeats_the_variant_in_each_part() -> None:
    output = render(golden_rows(), 120)

    headers = [line for line in output.splitlines() if "variant" in line]
    assert len(headers) == 2
    assert output.count("ort-fp32") == 1 + 4  # once with its quality, once per measurement


def test_no_measurements_is_said_not_drawn() -> None:
    assert "no measurements yet" in render([], 80)


def test_report_show_at_120_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    buffer = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(width=120, file=buffer, color_system=None))
    monkeypatch.setattr(sys, "argv", ["workbench", "report", "show", str(GOLDEN)])

    cli.main()  # exits only on an error

    output = buffer.getvalue()
    assert "…" not in output
    assert figures(golden_rows()) <= tokens(output)
