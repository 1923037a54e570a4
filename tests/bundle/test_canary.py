"""Two bundles behind one endpoint: the weighted and sticky split, the weight route, the canary decision."""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from bundle_support import digits_rows, infer_body, running, sample, send
from odd_models import failing_model
from typer.testing import CliRunner

from serving_harness.__main__ import BundlePlan, _parser, resolve_bundles
from serving_harness.bundle import read_manifest
from serving_harness.canary import CanarySplit
from workbench.bundle.export import ExportedBundle
from workbench.bundle.manifest import seal
from workbench.cli import app
from workbench.errors import UsageError
from workbench.gate import canary


def _canary(stable: Path, candidate: Path, *flags: str) -> BundlePlan:
    return resolve_bundles(_parser().parse_args(["serve", "--canary", str(stable), str(candidate), *flags]))


def _next_version(source: Path, target: Path, version: str, artifact: Path | None = None) -> Path:
    """A copy of a bundle as another version (with another artifact, if given), sealed like an export."""
    shutil.copytree(source, target)
    if artifact is not None:
        shutil.copyfile(artifact, target / "model" / "model.onnx")
    document = read_manifest(target).model_dump(mode="json", exclude={"files"})
    seal(target, {**document, "version": version})
    return target


@contextlib.contextmanager
def _traffic(url: str, rows: np.ndarray) -> Iterator[Counter[int]]:
    """Requests one after another from a thread until the block ends; yields the status counts."""
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client() as client:
            index = 0
            while not stop.is_set():
                statuses[send(client, url, rows[index % len(rows)][None]).status_code] += 1
                index += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield statuses
    finally:
        stop.set()
        thread.join(timeout=10)


def test_unversioned_requests_split_by_weight(bundle: ExportedBundle, bundle_fp32: ExportedBundle) -> None:
    plan = _canary(bundle.path, bundle_fp32.path, "--weight", "0.25")
    rows = digits_rows(bundle.path / "golden" / "inputs.npz")
    with running(plan.models, plan.settings, canary=plan.canary) as url, httpx.Client() as client:
        versions = Counter(send(client, url, rows[i % 16][None]).json()["model_version"] for i in range(400))
        metrics = client.get(f"{url}/metrics").text

    assert set(versions) == {"1.2.0", "1.3.0"}
    assert 0.15 < versions["1.3.0"] / 400 < 0.35  # 0.25 +- 4.6 binomial standard deviations
    for version, count in versions.items():
        assert sample(metrics, "sh_requests_total", model="digits", version=version, status="200") == count
    assert sample(metrics, "sh_canary_weight", version="1.3.0") == 0.25


def test_a_sticky_header_keeps_each_caller_on_one_version(bundle: ExportedBundle, bundle_fp32: ExportedBundle) -> None:
    plan = _canary(bundle.path, bundle_fp32.path, "--weight", "0.5", "--sticky-header", "x-user")
    rows = digits_rows(bundle.path / "golden" / "inputs.npz")
    seen: dict[str, set[str]] = {}
    with running(plan.models, plan.settings, canary=plan.canary) as url, httpx.Client() as client:
        for user in range(40):
            for _ in range(3):
                answer = send(client, url, rows[:1], **{"x-user": f"user-{user}"})
                seen.setdefault(f"user-{user}", set()).add(answer.json()["model_version"])

    assert all(len(versions) == 1 for versions in seen.values())
    assert {v for versions in seen.values() for v in versions} == {"1.2.0", "1.3.0"}


def test_raising_the_weight_never_moves_a_sticky_caller_back() -> None:
    split = CanarySplit("m", stable="1", candidate="2", weight=0.1, sticky_header="x-user")
    callers = [f"u{i}".encode() for i in range(500)]
    before = {c for c in callers if split.choose({b"x-user": c}) == "2"}
    split.set_weight(0.5)
    after = {c for c in callers if split.choose({b"x-user": c}) == "2"}
    assert before < after
    assert 0.4 < len(after) / len(callers) < 0.6


def test_the_weight_route_rolls_back_at_once(bundle: ExportedBundle, bundle_fp32: ExportedBundle) -> None:
    plan = _canary(bundle.path, bundle_fp32.path, "--weight", "0.5")
    rows = digits_rows(bundle.path / "golden" / "inputs.npz")
    with running(plan.models, plan.settings, canary=plan.canary) as url, httpx.Client() as client:
        state = client.get(f"{url}/v2/canary").json()
        assert (state["stable"], state["candidate"], state["weight"]) == ("1.2.0", "1.3.0", 0.5)
        assert state["slo"]["1.3.0"]["latency_budget_ms_p99"] == bundle_fp32.manifest.slo.latency_budget_ms_p99
        assert client.post(f"{url}/v2/canary", json={"weight": 2}).status_code == 400

        assert client.post(f"{url}/v2/canary", json={"weight": 0}).json()["weight"] == 0.0
        versions = {send(client, url, rows[:1]).json()["model_version"] for _ in range(50)}
        pinned = client.post(f"{url}/v2/models/digits/versions/1.3.0/infer", json=infer_body(rows[:1])).json()

    assert versions == {"1.2.0"}
    assert pinned["model_version"] == "1.3.0"  # a versioned path still reaches the candidate


def test_changing_the_weight_needs_the_token_when_there_is_one(
    bundle: ExportedBundle, bundle_fp32: ExportedBundle
) -> None:
    plan = _canary(bundle.path, bundle_fp32.path, "--auth-token", "s3cret")
    with running(plan.models, plan.settings, canary=plan.canary) as url, httpx.Client() as client:
        refused = client.post(f"{url}/v2/canary", json={"weight": 0})
        allowed = client.post(f"{url}/v2/canary", json={"weight": 0}, headers={"Authorization": "Bearer s3cret"})
    assert refused.status_code == 401
    assert allowed.status_code == 200


def test_a_canary_needs_two_versions_of_one_model(bundle: ExportedBundle) -> None:
    with pytest.raises(ValueError, match="two different versions"):
        _canary(bundle.path, bundle.path)


@pytest.mark.slow  # a live canary watched for seconds: `make test` runs it, `make test-fast` skips it
def test_a_failing_candidate_is_rolled_back(bundle_fp32: ExportedBundle, tmp_path: Path) -> None:
    # 1.3.1 is a bad optimization: its model fails on every real digit (and it has no fallback)
    bad = _next_version(bundle_fp32.path, tmp_path / "digits-1.3.1", "1.3.1", failing_model(tmp_path / "f.onnx"))
    plan = _canary(bundle_fp32.path, bad, "--weight", "0.5")
    rows = digits_rows(bad / "golden" / "inputs.npz")
    with running(plan.models, plan.settings, canary=plan.canary) as url, _traffic(url, rows):
        snapshots = canary.watch(url, "digits", duration_s=3.0, interval_s=0.5)
        split = canary.read_split(url)
        verdict = canary.judge(snapshots, stable="1.3.0", candidate="1.3.1", slo=split["slo"])
        rolled = CliRunner().invoke(app, ["canary", url, "--rollback"])
        after = canary.scrape(url, "digits")
        with httpx.Client() as client:
            statuses = [send(client, url, rows[:1]).status_code for _ in range(40)]
        final = canary.scrape(url, "digits")

    assert verdict.decision == "rollback"
    assert any("failures" in reason for reason in verdict.reasons)
    assert verdict.candidate.failure_rate > 0.5 > verdict.stable.failure_rate
    assert rolled.exit_code == 0 and "now gets 0% of traffic" in rolled.output
    assert statuses == [200] * 40
    assert final["1.3.1"].requests == after["1.3.1"].requests  # the candidate got nothing more


@pytest.mark.slow  # a live canary watched for seconds: `make test` runs it, `make test-fast` skips it
def test_the_canary_command_prints_the_decision_and_its_evidence(bundle_fp32: ExportedBundle, tmp_path: Path) -> None:
    bad = _next_version(bundle_fp32.path, tmp_path / "digits-1.3.1", "1.3.1", failing_model(tmp_path / "f.onnx"))
    plan = _canary(bundle_fp32.path, bad, "--weight", "0.5")
    rows = digits_rows(bad / "golden" / "inputs.npz")
    with running(plan.models, plan.settings, canary=plan.canary) as url, _traffic(url, rows):
        result = CliRunner().invoke(app, ["canary", url, "--duration", "3s", "--interval", "0.5s", "--apply"])
        state = canary.read_split(url)

    assert result.exit_code == canary.EXIT_CODES["rollback"], result.output
    assert "decision: ROLLBACK" in result.output
    assert "Fisher exact" in result.output and "1.3.1" in result.output
    assert state["weight"] == 0.0  # --apply rolled it back


@pytest.mark.slow  # a live canary watched for seconds: `make test` runs it, `make test-fast` skips it
def test_two_equal_versions_are_not_rolled_back(bundle_fp32: ExportedBundle, tmp_path: Path) -> None:
    same = _next_version(bundle_fp32.path, tmp_path / "digits-1.3.1", "1.3.1")  # A/A: only the version differs
    plan = _canary(bundle_fp32.path, same, "--weight", "0.5")
    rows = digits_rows(same / "golden" / "inputs.npz")
    with running(plan.models, plan.settings, canary=plan.canary) as url, _traffic(url, rows) as statuses:
        snapshots = canary.watch(url, "digits", duration_s=3.0, interval_s=0.5)
    verdict = canary.judge(snapshots, stable="1.3.0", candidate="1.3.1", policy=canary.CanaryPolicy(min_requests=50))

    assert set(statuses) == {200}
    assert verdict.decision in {"promote", "hold"}, verdict.reasons
    assert verdict.candidate.failures == 0


def test_too_little_traffic_holds() -> None:
    empty: dict[str, Any] = {}
    verdict = canary.judge([empty, empty], stable="1", candidate="2")
    assert verdict.decision == "hold"
    assert "served 0 of the 200 requests" in verdict.reasons[0]


def test_histogram_quantiles_match_prometheus() -> None:
    text = "\n".join(
        [
            "# TYPE sh_request_duration_seconds histogram",
            'sh_request_duration_seconds_bucket{model="m",version="1",le="0.001"} 50',
            'sh_request_duration_seconds_bucket{model="m",version="1",le="0.002"} 100',
            'sh_request_duration_seconds_bucket{model="m",version="1",le="+Inf"} 100',
            'sh_request_duration_seconds_count{model="m",version="1"} 100',
            'sh_request_duration_seconds_sum{model="m",version="1"} 0.12',
        ]
    )
    figures = canary.judge([{}, canary.parse_metrics(text, "m")], stable="1", candidate="2").stable
    assert figures.latency_ms_p50 == pytest.approx(1.0)  # the rank falls at the top of the first bucket
    assert figures.latency_ms_p99 == pytest.approx(1.98)  # linear inside (1 ms, 2 ms]
    assert figures.latency_ms_mean == pytest.approx(1.2)


def test_durations_read_like_the_cli_writes_them() -> None:
    assert [canary.parse_duration_s(t) for t in ("90", "30s", "5m", "1h")] == [90, 30, 300, 3600]
    with pytest.raises(UsageError, match="a duration"):
        canary.parse_duration_s("soon")
