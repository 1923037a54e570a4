"""A bundle served by the real harness over real HTTP: version labels, drift gauges, the fallback."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import numpy as np
import pytest
from bundle_support import digits_rows, running, sample, send
from odd_models import failing_model, slow_model

from serving_harness.__main__ import _parser, resolve_bundles
from serving_harness.bundle import load_bundle
from serving_harness.config import LimitsSettings, ServingConfig
from workbench.bundle.export import ExportedBundle
from workbench.data import Dataset


def _plan(*argv: str):  # type: ignore[no-untyped-def]
    return resolve_bundles(_parser().parse_args(["serve", *argv]))


def test_a_bundle_serves_with_its_version_on_every_metric(bundle: ExportedBundle) -> None:
    plan = _plan(str(bundle.path), "--verify")
    rows = digits_rows(bundle.path / "golden" / "inputs.npz")
    with running(plan.models, plan.settings) as url, httpx.Client() as client:
        answer = send(client, url, rows[:2])
        metadata = client.get(f"{url}/v2/models/digits").json()
        metrics = client.get(f"{url}/metrics").text

    assert answer.status_code == 200
    assert answer.json()["model_version"] == "1.2.0"
    assert metadata["versions"] == ["1.2.0"]
    assert sample(metrics, "sh_requests_total", model="digits", version="1.2.0", status="200") == 1
    assert sample(metrics, "sh_model_ready", version="1.2.0+fallback") == 1  # the fallback is loaded, idle
    assert sample(metrics, "sh_requests_total", version="1.2.0+fallback") == 0


def test_drift_gauges_follow_the_traffic(bundle: ExportedBundle, digits_dataset: Dataset) -> None:
    plan = _plan(str(bundle.path))
    digits = digits_dataset.inputs["input"]
    with running(plan.models, plan.settings) as url, httpx.Client() as client:
        for row in digits[:250]:  # traffic like the recipe's data
            assert send(client, url, row[None]).status_code == 200
        normal = client.get(f"{url}/metrics").text
        for row in np.clip(digits * 0.5 + 0.4, 0, 1):  # washed-out images: 360 of the 610 rows seen
            assert send(client, url, row[None]).status_code == 200
        shifted = client.get(f"{url}/metrics").text

    labels = {"model": "digits", "version": "1.2.0", "stat": "max"}
    assert sample(normal, "sh_drift_window_rows", version="1.2.0") == 250
    assert sample(normal, "sh_drift_psi", direction="input", **labels) < 0.25
    assert sample(shifted, "sh_drift_psi", direction="input", **labels) > 0.25
    assert sample(shifted, "sh_drift_psi", direction="output", **labels) > 0.25


def test_no_drift_turns_monitoring_off(bundle: ExportedBundle) -> None:
    plan = _plan(str(bundle.path), "--no-drift")
    assert all(m.drift_baseline is None for m in plan.models)


# --------------------------------------------------------------------------------------------- fallback


def _fallback_run(bundle: ExportedBundle, loop: str = "uvloop", **primary: object) -> tuple[list[int], str, bool]:
    """Serve the bundle's primary changed as given (its fallback as exported); 5 requests; statuses, metrics."""
    config = load_bundle(bundle.path).model_config()
    config = dataclasses.replace(config, **primary)  # type: ignore[arg-type]
    rows = digits_rows(bundle.path / "golden" / "inputs.npz")
    with running([config], loop=loop) as url, httpx.Client() as client:
        statuses = [send(client, url, rows[i : i + 1]).status_code for i in range(5)]
        ready = client.get(f"{url}/v2/health/ready").status_code == 200
        return statuses, client.get(f"{url}/metrics").text, ready


def test_the_fallback_answers_when_the_primary_errors(bundle: ExportedBundle, tmp_path: Path) -> None:
    statuses, metrics, _ = _fallback_run(bundle, path=failing_model(tmp_path / "failing.onnx"))
    assert statuses == [200] * 5
    assert sample(metrics, "sh_fallback_total", version="1.2.0", reason="error") == 5
    assert sample(metrics, "sh_batch_size_count", version="1.2.0+fallback") == 5  # the fallback ran them


def test_the_fallback_answers_when_the_primary_times_out(bundle: ExportedBundle, tmp_path: Path) -> None:
    config = load_bundle(bundle.path).model_config()
    settings = config.settings or ServingConfig()
    tight = settings.model_copy(update={"limits": LimitsSettings(request_timeout_s=0.002)})
    slow = slow_model(tmp_path / "slow.onnx")  # about 20 ms a row here: never within 2 ms
    # uvloop, as served: its timers round to the millisecond, which the batcher's timeout must survive
    statuses, metrics, _ = _fallback_run(bundle, loop="uvloop", path=slow, settings=tight)
    assert statuses == [200] * 5
    assert sample(metrics, "sh_fallback_total", version="1.2.0", reason="timeout") == 5


def test_the_fallback_serves_when_the_primary_cannot_load(bundle: ExportedBundle, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"an int8 kernel this machine lacks")
    statuses, metrics, ready = _fallback_run(bundle, path=broken)
    assert statuses == [200] * 5
    assert ready  # degraded, not down
    assert sample(metrics, "sh_model_ready", version="1.2.0") == 0  # ...and the NotReady alert says so
    assert sample(metrics, "sh_fallback_total", version="1.2.0", reason="unavailable") == 5


def test_without_a_fallback_the_primary_error_reaches_the_client(bundle_fp32: ExportedBundle, tmp_path: Path) -> None:
    statuses, metrics, _ = _fallback_run(bundle_fp32, path=failing_model(tmp_path / "failing.onnx"))
    assert statuses == [500] * 5
    assert sample(metrics, "sh_fallback_total") == 0


@pytest.mark.parametrize("flag", ["--model-version", "--workers"])
def test_bundle_identity_flags_are_refused(bundle: ExportedBundle, flag: str) -> None:
    with pytest.raises(ValueError, match="a bundle names its own model and version"):
        _plan(str(bundle.path), flag, "2")
