"""The bundle's Prometheus rules: valid, unit-tested with promtool, and about metrics the server exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from bundle_support import digits_rows, running, send

from serving_harness.__main__ import _parser, resolve_bundles
from workbench.bundle.export import ExportedBundle

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_the_rules_pass_promtool_check(bundle: ExportedBundle) -> None:
    done = _promtool("check", "rules", "alerts.yaml", cwd=bundle.path / "monitoring")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 6 rules found" in done.stdout


@needs_promtool
def test_the_rules_pass_their_unit_tests(bundle: ExportedBundle) -> None:
    done = _promtool("test", "rules", "alerts_test.yaml", cwd=bundle.path / "monitoring")
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_the_unit_tests_catch_a_wrong_threshold(bundle: ExportedBundle, tmp_path: Path) -> None:
    monitoring = Path(shutil.copytree(bundle.path / "monitoring", tmp_path / "monitoring"))
    rules = yaml.safe_load((monitoring / "alerts.yaml").read_text())
    latency = rules["groups"][0]["rules"][0]
    latency["expr"] = re.sub(r"> [0-9.e-]+$", "> 60", latency["expr"].strip())  # a budget nothing exceeds
    (monitoring / "alerts.yaml").write_text(yaml.safe_dump(rules))

    done = _promtool("test", "rules", "alerts_test.yaml", cwd=monitoring)
    assert done.returncode != 0
    assert "DigitsLatencyP99OverBudget" in done.stdout + done.stderr


def test_the_budget_in_the_rules_is_the_manifests(bundle: ExportedBundle) -> None:
    rules = yaml.safe_load((bundle.path / "monitoring" / "alerts.yaml").read_text())
    by_name = {rule["alert"]: rule for rule in rules["groups"][0]["rules"]}
    slo = bundle.manifest.slo
    latency = by_name["DigitsLatencyP99OverBudget"]["expr"]
    assert float(latency.rsplit(">", 1)[1]) == pytest.approx(slo.latency_budget_ms_p99 / 1000)
    assert float(by_name["DigitsErrorRateHigh"]["expr"].rsplit(">", 1)[1]) == slo.error_rate_max
    assert set(by_name) == {
        f"Digits{name}"
        for name in (
            "LatencyP99OverBudget",
            "ErrorRateHigh",
            "DriftHigh",
            "NotReady",
            "MetricsAbsent",
            "FallbackServing",
        )
    }


def test_every_metric_the_rules_use_is_exposed_by_the_server(
    bundle: ExportedBundle, bundle_fp32: ExportedBundle
) -> None:
    rules = (bundle.path / "monitoring" / "alerts.yaml").read_text()
    dashboard = (bundle.path / "monitoring" / "dashboard.json").read_text()
    used = set(re.findall(r"\bsh_[a-z_]+", rules + dashboard))
    plan = resolve_bundles(_parser().parse_args(["serve", "--canary", str(bundle.path), str(bundle_fp32.path)]))
    rows = digits_rows(bundle.path / "golden" / "inputs.npz")
    with running(plan.models, plan.settings, canary=plan.canary) as url, httpx.Client() as client:
        for _ in range(5):
            send(client, url, rows[:1])
        text = client.get(f"{url}/metrics").text
    samples = set(re.findall(r"^(sh_[a-z_]+)", text, flags=re.MULTILINE))
    families = set(re.findall(r"^# TYPE (sh_[a-z_]+)", text, flags=re.MULTILINE))  # drift: no sample before 200 rows

    assert used <= samples | families, used - samples - families
