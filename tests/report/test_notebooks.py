"""The notebooks run on the digits example (executed with nbmake on a python3 kernel from this
environment) and are stored without outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.report.rundir import ReportStore

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
NAMES = {"quickstart.ipynb", "compare-runs.ipynb", "pareto.ipynb"}


def test_notebooks_are_stored_without_outputs() -> None:
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} == NAMES
    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = json.loads(path.read_text())
        assert notebook["metadata"]["kernelspec"]["name"] == "python3"
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: strip outputs"


@pytest.mark.slow  # executes every notebook: ~25 s
def test_notebooks_run_on_the_digits_example(tmp_path: Path, cache_dir: Path) -> None:
    pytest.importorskip("nbmake", reason="nbmake is in the dev extra: pip install -e '.[dev]'")
    env = {**os.environ, "WORKBENCH_REPORTS": str(tmp_path), "WORKBENCH_CACHE_DIR": str(cache_dir)}
    command = [sys.executable, "-m", "pytest", "--nbmake", "--nbmake-timeout=300", "-q", "-p", "no:cacheprovider"]
    # one nbmake process per notebook, side by side: most of each one's time is a kernel starting up
    running = {
        path.name: subprocess.Popen(
            [*command, str(path)],
            cwd=NOTEBOOKS.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for path in sorted(NOTEBOOKS.glob("*.ipynb"))
    }
    outputs = {name: process.communicate(timeout=900)[0] for name, process in running.items()}
    failed = {name: outputs[name][-4000:] for name, process in running.items() if process.returncode != 0}
    assert not failed, failed
    runs = ReportStore(tmp_path).runs()
    assert len(runs) == 4 and all(r.read_envelope().status == "complete" for r in runs)  # 1 + 2 + 1 runs
    assert all((r.path / "report.html").exists() for r in runs)
