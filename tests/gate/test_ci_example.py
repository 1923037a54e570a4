"""The GitHub Actions example is a valid workflow for its runner, and wires the gate to the history."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

EXAMPLE = Path(__file__).parents[2] / "examples" / "ci" / "github-actions.yml"


def test_the_example_validates_against_the_github_workflow_schema() -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_pull_requests_gate_with_history_and_main_keeps_the_timeline() -> None:
    jobs = yaml.safe_load(EXAMPLE.read_text())["jobs"]
    baseline = "\n".join(step.get("run", "") for step in jobs["baseline"]["steps"])
    history = "\n".join(step.get("run", "") for step in jobs["history"]["steps"])

    assert "--history history/reports" in baseline and "workbench history" in baseline
    assert "--reports history/reports" in history and "push --quiet origin perf-history" in history
    assert jobs["history"]["if"] == "github.event_name == 'push'"
