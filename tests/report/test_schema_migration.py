"""Reports stay readable: a golden v1 run (a real digits run with served steps, committed) is read,
judged and rendered by every later workbench, through explicit migrations."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from report_support import GOLDEN_RUN, chromium, inspect_page

import workbench as wb
from workbench.errors import UsageError
from workbench.report import schema
from workbench.report.findings import find_run
from workbench.report.html import render_html, write_report_html
from workbench.report.render import render_markdown
from workbench.report.rundir import RunDir
from workbench.report.schema import SCHEMA_VERSION, VariantRecord, migrate
from workbench.report.table import records_to_frame


def test_golden_v1_documents_migrate_and_validate() -> None:
    document = json.loads((GOLDEN_RUN / "run.json").read_text())
    assert document["schema_version"] == 1
    envelope = RunDir(GOLDEN_RUN).read_envelope()
    assert envelope.schema_version == SCHEMA_VERSION and envelope.recipe_name == "digits-cpu"
    for path in sorted((GOLDEN_RUN / "variants").glob("*.json")):
        record = VariantRecord.model_validate(migrate(orjson.loads(path.read_bytes()), kind="variant", version=1))
        assert record.status == "ok" and {m.mode for m in record.measurements} == {"inprocess", "served"}


def test_golden_v1_reads_judges_and_renders(golden: RunDir) -> None:
    envelope, frame, records = wb.load_report(golden.path)
    assert set(frame["variant"]) == {r.variant for r in records} == {"torch-eager", "ort-fp32"}
    rebuilt = records_to_frame(golden.run_id, records)
    assert len(rebuilt) == len(frame) and set(frame.columns) <= set(rebuilt.columns)
    findings = find_run(golden)
    assert findings.selection is not None and findings.selection.mode == "served"
    assert findings.cost is not None and findings.cost["cheapest"].sum() == 1  # the recipe's price: 0.5/hour
    assert len(findings.served) == 4 and set(findings.details) == {"torch-eager", "ort-fp32"}
    markdown = render_markdown(envelope, frame, records, findings=findings)
    assert "## Served load steps" in markdown and "## Cost per million inferences" in markdown
    page = render_html(envelope, findings.frame, records, findings=findings)
    assert page.count('<img src="data:image/png;base64,') == 5


def test_golden_v1_page_loads_in_chromium(golden: RunDir) -> None:
    if chromium() is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    check = inspect_page(write_report_html(golden))
    assert len(check.images) == 5 and all(i["complete"] and i["width"] > 0 for i in check.images)
    assert check.errors == []


def test_a_report_newer_than_this_workbench_is_refused(golden: RunDir) -> None:
    document = json.loads((golden.path / "run.json").read_text())
    (golden.path / "run.json").write_text(json.dumps({**document, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(UsageError, match=f"report schema {SCHEMA_VERSION + 1} is newer than this workbench reads"):
        golden.read_envelope()


def test_every_older_version_has_a_migration_step() -> None:
    for kind in ("run", "variant"):
        assert set(schema.MIGRATIONS[kind]) == set(range(1, SCHEMA_VERSION)), kind  # type: ignore[index]


def test_migrations_apply_one_step_at_a_time_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a future bump looks like: v1 → v2 renames a field, v2 → v3 adds one."""

    def rename(document: dict[str, Any]) -> dict[str, Any]:
        return {("summary" if k == "outcome" else k): v for k, v in document.items()}

    def add_notes(document: dict[str, Any]) -> dict[str, Any]:
        return {**document, "notes": document.get("notes", [])}

    monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
    monkeypatch.setitem(schema.MIGRATIONS, "run", {1: rename, 2: add_notes})
    monkeypatch.setitem(schema.MIGRATIONS, "variant", {1: add_notes, 2: lambda d: d})
    assert migrate({"schema_version": 1, "outcome": {"best": "a"}}) == {
        "schema_version": 3,
        "summary": {"best": "a"},
        "notes": [],
    }
    assert migrate({"schema_version": 2, "summary": {}}) == {"schema_version": 3, "summary": {}, "notes": []}
    assert migrate({"variant": "a"}, kind="variant", version=1) == {"variant": "a", "notes": []}
