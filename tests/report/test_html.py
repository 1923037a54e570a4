"""report.html for a real digits run: self-contained, every section and plot there, and a real
headless Chromium loads it with its images and no console error."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from report_support import PageCheck, chromium, inspect_page, run_cli

from workbench.report.html import HTML_FILE, write_report_html
from workbench.report.rundir import RunDir

PLOTS = {"Latency percentiles", "Accuracy vs latency, Pareto front", "In-process throughput by batch size"}
SERVED_PLOTS = {"Throughput vs p99 latency", "Queue time, compute time and batch sizes"}
needs_chromium = pytest.mark.skipif(
    chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium); the browser check needs one"
)


def test_finalize_writes_a_self_contained_page(digits_run: RunDir) -> None:
    page = (digits_run.path / HTML_FILE).read_text()
    for section in ("summary", "plots", "results", "flags", "quality", "environment", "recipe"):
        assert f'<section id="{section}">' in page
    assert "Chosen: <strong>" in page and "torch-eager" in page and "ort-fp32" in page
    assert "Cost per million inferences at 0.5 USD/hour" in page
    assert "Pareto front" in page and "Served load steps" not in page  # load was off for this run
    assert "default-src &#x27;none&#x27;" in page or "default-src 'none'" in page
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith(("data:image/png;base64,", "#")) for s in sources)
    assert set(re.findall(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)"', page)) == PLOTS


def test_report_md_carries_the_same_tables(digits_run: RunDir) -> None:
    markdown = (digits_run.path / "report.md").read_text()
    for heading in (
        "## Ranking",
        "## Cost per million inferences",
        "## Results",
        "## Lineage",
        "## Environment",
        "## Recipe",
    ):
        assert heading in markdown
    assert "**Best: `" in markdown and "Objective: highest throughput_items_per_s" in markdown


@needs_chromium
def test_chromium_loads_the_page_with_its_images_and_no_errors(digits_run: RunDir, tmp_path: Path) -> None:
    check = inspect_page(digits_run.path / HTML_FILE)
    assert check.title == f"digits-cpu — run {digits_run.run_id}"
    assert {image["alt"] for image in check.images} == PLOTS
    assert all(image["complete"] and image["width"] >= 600 for image in check.images), check.images
    assert check.errors == []
    assert check.screenshot.startswith(b"\x89PNG") and len(check.screenshot) > 50_000


def test_a_served_run_adds_its_curves_and_breakdown(golden: RunDir) -> None:
    page = write_report_html(golden).read_text()
    assert set(re.findall(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)"', page)) == PLOTS | SERVED_PLOTS
    assert "Served load steps" in page and "case c4" in page


@needs_chromium
def test_the_browser_check_sees_a_broken_page(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!doctype html><html><head><title>broken</title></head><body>"
        '<img alt="cut" src="data:image/png;base64,iVBORw0KGgo="><script>console.error("boom")</script></body></html>'
    )
    check: PageCheck = inspect_page(broken)
    assert check.images == [{"alt": "cut", "complete": True, "width": 0}]
    assert "boom" in " ".join(check.errors)


def test_report_open_never_rewrites_a_finished_run_and_renders_another_price_elsewhere(
    digits_run: RunDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "digits-cpu" / digits_run.run_id
    shutil.copytree(digits_run.path, copy)
    page = (copy / HTML_FILE).read_bytes()
    open_run = ["report", "open", str(copy), "--no-browser", "--price-per-hour", "2"]

    assert run_cli(monkeypatch, *open_run) == 2
    assert "give --out FILE for another price" in capsys.readouterr().err
    assert run_cli(monkeypatch, *open_run, "--out", str(copy / "at-2.html")) == 2
    assert "inside the run's folder" in capsys.readouterr().err
    elsewhere = tmp_path / "at-2.html"
    assert run_cli(monkeypatch, *open_run, "--out", str(elsewhere)) == 0

    assert f"html: {elsewhere}" in capsys.readouterr().out
    assert "Cost per million inferences at 2 USD/hour" in elsewhere.read_text()
    assert (copy / HTML_FILE).read_bytes() == page and not (copy / "at-2.html").exists()


def test_report_show_says_where_the_page_is(
    digits_run: RunDir, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(monkeypatch, "report", "show", str(digits_run.path)) == 0
    assert f"html: {digits_run.path / HTML_FILE}" in capsys.readouterr().out
