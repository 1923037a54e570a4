"""A run means the same on another machine: no file of it records an absolute folder of this one.

Artifacts are recorded relative to the build cache, load folders and the server log relative to the run folder,
Python by its executable's name. The golden run the report tests read is held to the same rule.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from run_support import SHORT_MEASURE

from workbench.artifact import recorded_path, resolve_recorded_path
from workbench.paths import cache_dir
from workbench.recipe.loader import load_recipe
from workbench.report.rundir import ReportStore
from workbench.sweep.runner import run_recipe

ROOT = Path(__file__).parents[2]
GOLDEN = ROOT / "tests" / "report" / "golden"
RECORDS = ("run.json", "variants/*.json", "load/*.json")
ONE_SERVED_VARIANT = [
    *SHORT_MEASURE,
    "measure.batch_sizes=[1]",
    "search.baseline=null",
    "search.pipelines={ort-fp32: [export.onnx]}",
    "load={enabled: true, profile: {kind: concurrency, users: [2], warmup_s: 0.3, window_s: 0.5,"
    " min_windows: 3, max_windows: 4, min_requests: 100}}",
]


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON document, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def is_machine_path(text: str) -> bool:
    """An absolute path whose top folder exists here (``/tmp/...``, ``/home/...``), unlike a URL route (``/v2/...``)."""
    top = text.split("/")[1] if text.startswith("/") else ""
    return bool(top) and Path("/", top).is_dir()


def records(run: Path) -> list[Path]:
    """The documents a run is read from. Working files the load engine hands its Locust processes (``load/<variant>/``)
    are not among them: they hold this machine's folders on purpose, and nothing reads them after the run."""
    return sorted(path for pattern in RECORDS for path in run.glob(pattern))


def absolute_paths(run: Path) -> list[str]:
    """``file: value`` for every string in the run's records that is an absolute path of a machine."""
    return [
        f"{path.relative_to(run)}: {text}"
        for path in records(run)
        for text in strings(json.loads(path.read_text()))
        if is_machine_path(text)
    ]


@pytest.fixture(scope="module")
def served_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    recipe = load_recipe(ROOT / "recipes" / "digits-cpu.yaml", ONE_SERVED_VARIANT)
    return run_recipe(recipe, reports=tmp_path_factory.mktemp("reports")).path


def test_a_run_records_no_absolute_path(served_run: Path) -> None:
    assert (served_run / "load" / "ort-fp32.json") in records(served_run)  # the served details are checked too
    assert absolute_paths(served_run) == []
    text = "\n".join(path.read_text() for path in [*records(served_run), served_run / "report.md"])
    for folder in (str(served_run.parents[1]), sys.prefix, str(cache_dir())):
        assert folder not in text


def test_recorded_paths_resolve_to_the_files_of_this_run(served_run: Path) -> None:
    variant = ReportStore(served_run.parents[1]).find(str(served_run)).read_variants()[0]
    assert variant.artifact is not None
    model = resolve_recorded_path(variant.artifact.path, cache_dir())
    assert model.is_file() and model.is_relative_to(cache_dir())
    details = json.loads((served_run / "load" / "ort-fp32.json").read_text())
    assert "listening" in (served_run / details["server_log"]).read_text()
    assert all((served_run / step["folder"]).is_dir() for step in details["steps"])
    assert json.loads((served_run / "run.json").read_text())["environment"]["python"]["executable"] == (
        Path(sys.executable).name
    )


def test_the_golden_run_records_no_absolute_path() -> None:
    runs = [path.parent for path in GOLDEN.rglob("run.json")]
    assert runs, "no golden run found: the check would pass vacuously"
    assert [found for run in runs for found in absolute_paths(run)] == []


def test_recorded_path_is_relative_under_its_root_and_absolute_elsewhere(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    inside = root / "artifacts" / "ab" / "model.onnx"
    outside = tmp_path / "mine" / "model.onnx"
    assert is_machine_path(str(inside)) and not is_machine_path("/v2/models/digits/infer")
    assert recorded_path(inside, root) == "artifacts/ab/model.onnx"
    assert recorded_path(outside, root) == str(outside)
    assert resolve_recorded_path("artifacts/ab/model.onnx", root) == inside
    assert resolve_recorded_path(str(outside), root) == outside  # an older run's absolute path still resolves
