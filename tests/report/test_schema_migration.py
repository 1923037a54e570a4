"""Reports stay readable: a golden v1 run (a real digits run with served load steps, committed) is read,
judged and rendered by every later workbench, through explicit migrations (v2: a measurement's ``step``
is its ``case``; records hold typed serving settings, build steps and lineage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from report_support import GOLDEN_RUN, chromium, inspect_page

import workbench as wb
from serving_harness.config import ServingConfig
from workbench.artifact import LineageEntry
from workbench.errors import UsageError
from workbench.recipe.spec import StepSpec
from workbench.report import schema
from workbench.report.findings import find_run
from workbench.report.html import render_html, write_report_html
from workbench.report.render import render_markdown
from workbench.report.rundir import ReportStore, RunDir
from workbench.report.schema import SCHEMA_VERSION, ExternalServing, VariantRecord, migrate
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


# ------------------------------------------------------------------------------------------------ v1 → v2


def test_v1_to_v2_names_each_measurement_a_case() -> None:
    v1 = {"variant": "a", "measurements": [{"mode": "inprocess", "step": "b1"}, {"mode": "served", "step": "c4"}]}
    v2 = migrate(v1, kind="variant", version=1)
    assert [m["case"] for m in v2["measurements"]] == ["b1", "c4"]
    assert all("step" not in m for m in v2["measurements"]) and v1["measurements"][0]["step"] == "b1"  # a copy
    assert migrate({"variant": "failed early"}, kind="variant", version=1) == {"variant": "failed early"}
    assert migrate({"schema_version": 1, "run_id": "x"}) == {"schema_version": 2, "run_id": "x"}


def test_golden_v1_results_and_records_read_with_case(golden: RunDir) -> None:
    on_disk = orjson.loads(golden.variant_path("ort-fp32").read_bytes())
    assert "step" in on_disk["measurements"][0]  # the golden files stay as v1 wrote them
    frame = golden.read_results()
    assert "case" in frame.columns and "step" not in frame.columns
    assert set(frame.loc[frame["mode"] == "served", "case"]) == {"c1", "c4"}
    records = {r.variant: r for r in golden.read_variants()}
    assert [m.case for m in records["ort-fp32"].measurements] == ["b1", "b8", "c1", "c4"]


def test_golden_v1_records_are_typed(golden: RunDir) -> None:
    record = {r.variant: r for r in golden.read_variants()}["ort-fp32"]
    assert isinstance(record.serving, ServingConfig) and record.serving.runtime.name == "onnxruntime"
    assert record.serving.runtime.intra_op_threads == 1 and record.serving.batching.max_batch_size == 1
    assert record.steps == [StepSpec(name="export.onnx")]
    (entry,) = record.lineage
    assert isinstance(entry, LineageEntry) and entry.step == "export.onnx" and entry.cached
    assert entry.config == {"opset": 18, "dynamo": True} and entry.content_hash == record.artifact.content_hash  # type: ignore[union-attr]


def test_a_v2_run_round_trips_typed_and_in_the_same_json_shape(golden: RunDir, tmp_path: Path) -> None:
    v1 = {r.variant: r for r in golden.read_variants()}["ort-fp32"]
    run = ReportStore(tmp_path).new_run("digits-cpu")
    run.write_envelope(golden.read_envelope().model_copy(update={"run_id": run.run_id}))
    run.write_variant(v1)
    run.write_results(records_to_frame(run.run_id, [v1]))
    assert orjson.loads(run.run_file.read_bytes())["schema_version"] == SCHEMA_VERSION == 2
    (again,) = run.read_variants()
    assert again == v1
    written = orjson.loads(run.variant_path("ort-fp32").read_bytes())
    before = orjson.loads(golden.variant_path("ort-fp32").read_bytes())
    assert [m["case"] for m in written["measurements"]] == [m["step"] for m in before["measurements"]]
    assert written["steps"] == before["steps"] and written["lineage"] == before["lineage"]
    assert written["serving"]["runtime"] == before["serving"]["runtime"]  # later fields may be added, none renamed
    assert list(run.read_results()["case"]) == ["b1", "b8", "c1", "c4"]


def test_an_endpoint_measured_elsewhere_keeps_its_address(tmp_path: Path) -> None:
    record = VariantRecord(
        variant="digits@127.0.0.1:8000",
        pipeline="external",
        is_baseline=True,
        steps=[],
        serving=ExternalServing(url="http://127.0.0.1:8000", model="digits"),
        serving_label="http://127.0.0.1:8000",
        runtime="external",
        status="ok",
    )
    run = ReportStore(tmp_path).new_run("load-digits")
    run.write_variant(record)
    assert orjson.loads(run.variant_path(record.variant).read_bytes())["serving"] == {
        "url": "http://127.0.0.1:8000",
        "model": "digits",
    }
    assert run.read_variants() == [record]
