"""``workbench load URL``: measure any OIP v2 endpoint and write the same versioned report as a run.

The report is a run of the pseudo-recipe ``load-<model>`` with one variant named after the model
and the endpoint (``digits@127.0.0.1:8000``); its ``run.json`` records the target, the profile and
the environment, ``variants/`` the measurements, and ``load/<variant>.json`` what does not fit a
row (errors by kind, the server's own breakdown, CPU and memory, windows, the SLA search).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import orjson

from workbench.measure.load.engine import ServedResult, measure_endpoint
from workbench.recipe.profiles import LoadProfile, load_profile
from workbench.report.render import render_markdown
from workbench.report.rundir import ReportStore, RunDir
from workbench.report.schema import ExternalServing, VariantRecord
from workbench.report.table import records_to_frame

__all__ = ["LoadRun", "load_endpoint", "write_load_report"]


@dataclass(frozen=True)
class LoadRun:
    """The run folder and what was measured."""

    run: RunDir
    result: ServedResult
    record: VariantRecord


def load_endpoint(
    url: str,
    *,
    model: str,
    profile: LoadProfile | str | Path | None,
    reports: Path | str = "reports",
    workers: int = 0,
    data: Path | None = None,
    batch_size: int | None = None,
    binary: bool | None = None,
) -> LoadRun:
    """Measure ``model`` at ``url`` under ``profile``; write and return the report."""
    spec = load_profile(profile)
    overrides = {k: v for k, v in {"batch_size": batch_size, "binary": binary}.items() if v is not None}
    spec = spec.model_copy(update=overrides) if overrides else spec
    store = ReportStore(reports)
    run = store.new_run(_recipe_name(model))
    target = {"url": url, "model": model, "profile": spec.model_dump(mode="json"), "workers": workers}
    run.start(hashlib.sha256(orjson.dumps(target, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12], {"load": target})
    try:
        result = measure_endpoint(
            url, model=model, profile=spec, workdir=run.load_workdir("work"), workers=workers, data=data
        )
    except BaseException:
        run.set_status("failed", {})
        raise
    record = write_load_report(run, result, url=url, model=model)
    return LoadRun(run=run, result=result, record=record)


def write_load_report(run: RunDir, result: ServedResult, *, url: str, model: str) -> VariantRecord:
    """Write the variant's details, the variant, results.parquet and report.md (all through ``RunDir``,
    like a recipe run); mark the run complete."""
    record = VariantRecord(
        variant=variant_name(url, model),
        pipeline="external",
        is_baseline=True,
        steps=[],
        serving=ExternalServing(url=url, model=model),
        serving_label=url,
        runtime="external",
        status="ok",
        measurements=result.measurements,
    )
    run.write_load_details(record.variant, {"variant": record.variant, **result.details()})
    run.write_variant(record)
    frame = records_to_frame(run.run_id, [record])
    run.write_results(frame)
    summary: dict[str, Any] = {"advice": result.advice}
    if result.sla is not None:
        summary["sla"] = result.sla.as_dict()
    run.set_status("complete", summary)
    markdown = render_markdown(run.read_envelope(), frame, [record])
    run.write_markdown(markdown + _advice_md(result))
    return record


def variant_name(url: str, model: str) -> str:
    return f"{model}@{urlparse(url).netloc or url}"


def _recipe_name(model: str) -> str:
    return "load-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-") or "model")


def _advice_md(result: ServedResult) -> str:
    lines = []
    if result.sla is not None:
        sla = result.sla
        found = f"{sla.rate_rps} rps" if sla.rate_rps is not None else "no rate"
        lines.append(f"\n## SLA search\n\n{found} meets {sla.percentile} <= {sla.latency_ms_max} ms.\n")
    if result.advice:
        lines.append("\n## Warnings\n\n" + "".join(f"- {a}\n" for a in result.advice))
    return "".join(lines)
