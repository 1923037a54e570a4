"""``workbench export``: a real digits run becomes a bundle with everything an operator needs."""

from __future__ import annotations

import json
import shutil
import tarfile
from importlib.metadata import version as installed_version
from pathlib import Path

import pytest
import yaml

import serving_harness
from serving_harness.bundle import bundle_files, file_sha256, load_bundle
from serving_harness.drift import load_baseline
from workbench.bundle.export import ExportedBundle, export_bundle, write_archive
from workbench.errors import NotFoundError, UsageError
from workbench.report.rundir import RunDir


def test_manifest_describes_the_variant_it_came_from(bundle: ExportedBundle, digits_run: RunDir) -> None:
    manifest = bundle.manifest
    record = next(r for r in digits_run.read_variants() if r.variant == "ort-int8-matmul")

    assert (manifest.name, manifest.version) == ("digits", "1.2.0")  # the version comes from --out
    assert manifest.source["run_id"] == digits_run.run_id
    assert manifest.source["variant"] == "ort-int8-matmul"
    assert [entry["step"] for entry in manifest.lineage] == ["export.onnx", "quantize.ort_dynamic"]
    assert manifest.lineage[-1]["content_hash"] == record.artifact.content_hash  # type: ignore[union-attr]
    assert [(t.name, t.datatype, t.shape) for t in manifest.inputs] == [("input", "FP32", (-1, 1, 8, 8))]
    assert [(t.name, t.shape) for t in manifest.outputs] == [("logits", (-1, 10))]
    assert manifest.accuracy["value"] == pytest.approx(record.quality.value)  # type: ignore[union-attr]
    assert file_sha256(bundle.path / "model" / "model.onnx") == record.artifact.content_hash  # type: ignore[union-attr]


def test_slos_come_from_the_run_and_say_which_figures(bundle: ExportedBundle, digits_run: RunDir) -> None:
    slo = bundle.manifest.slo
    record = next(r for r in digits_run.read_variants() if r.variant == "ort-int8-matmul")
    batch1 = next(m for m in record.measurements if m.batch_size == 1)

    assert slo.source == "inprocess"  # this run served no load
    assert slo.latency_ms_p50 == batch1.latency_ms["p50"]
    assert slo.max_throughput_rps_under_sla is None
    assert slo.latency_budget_ms_p99 > (batch1.latency_ms["p99"] or batch1.latency_ms["max"] or 0.0)
    assert "in-process" in (slo.model_extra or {})["budget_basis"]


def test_every_file_is_hashed_and_nothing_else_is_there(bundle: ExportedBundle) -> None:
    listed = bundle.manifest.files
    assert sorted(listed) == list(bundle_files(bundle.path))
    assert all(file_sha256(bundle.path / name) == digest for name, digest in listed.items())
    assert {"serving.json", "requirements.txt", "Dockerfile", "drift/baseline.json", "golden/inputs.npz"} <= set(listed)


def test_requirements_pin_the_serving_stack_only(bundle: ExportedBundle) -> None:
    lines = (bundle.path / "requirements.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))

    for name in ("onnxruntime", "numpy", "starlette", "uvicorn", "pydantic", "prometheus-client"):
        assert pins[name] == installed_version(name)
    assert not {"torch", "onnx", "locust", "pandas", "workbench", "typer"} & set(pins)


def test_serving_settings_are_the_measured_ones_without_secrets(bundle: ExportedBundle, digits_run: RunDir) -> None:
    record = next(r for r in digits_run.read_variants() if r.variant == "ort-int8-matmul")
    serving = json.loads((bundle.path / "serving.json").read_text())
    assert "auth_token" not in serving
    measured = record.serving.model_dump(mode="json")
    assert serving["runtime"] == measured["runtime"]
    assert serving["batching"] == measured["batching"]


def test_the_fallback_is_the_fp32_export_when_the_baseline_is_torch(bundle: ExportedBundle) -> None:
    fallback = bundle.manifest.fallback
    assert fallback is not None
    assert fallback.variant == "ort-fp32"
    assert (bundle.path / fallback.artifact).is_file()
    assert fallback.primary_timeout_s >= 1.0


def test_the_drift_baseline_covers_inputs_and_outputs(bundle: ExportedBundle) -> None:
    baseline = load_baseline(bundle.path / "drift" / "baseline.json")
    assert baseline.rows == 360  # the digits held-out split
    assert [(t.name, t.reduce, len(t.features)) for t in baseline.inputs] == [("input", "element", 64)]
    assert [(t.name, len(t.features)) for t in baseline.outputs] == [("logits", 10)]
    for feature in baseline.inputs[0].features:
        assert sum(feature.shares) == pytest.approx(1.0)


def test_the_vendored_harness_is_the_one_that_was_measured(bundle: ExportedBundle) -> None:
    source = Path(serving_harness.__file__).parent
    vendored = bundle.path / "vendor" / "serving_harness"
    for name in ("protocol/rest.py", "bundle/load.py", "drift.py", "runtimes/onnxruntime.py"):
        assert (vendored / name).read_bytes() == (source / name).read_bytes()
    assert not list(vendored.rglob("__pycache__"))


def test_the_archive_holds_the_bundle_and_is_reproducible(bundle: ExportedBundle, tmp_path: Path) -> None:
    with tarfile.open(bundle.archive) as tar:
        members = {m.name for m in tar.getmembers() if m.isfile()}
    assert members == {f"digits-1.2.0/{name}" for name in [*bundle.manifest.files, "manifest.json"]}
    copy = Path(shutil.copytree(bundle.path, tmp_path / "digits-1.2.0"))  # the same files, made later
    assert write_archive(copy).read_bytes() == bundle.archive.read_bytes()


def test_deployment_files_name_the_bundle_and_probe_the_health_routes(bundle: ExportedBundle) -> None:
    deployment = yaml.safe_load((bundle.path / "deploy/k8s/deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == "1.2.0"

    hpa = yaml.safe_load((bundle.path / "deploy/k8s/hpa.yaml").read_text())
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    service = yaml.safe_load((bundle.path / "deploy/k8s/service.yaml").read_text())
    assert service["spec"]["selector"]["app.kubernetes.io/name"] == "digits"
    kserve = yaml.safe_load((bundle.path / "deploy/kserve/inferenceservice.yaml").read_text())
    predictor = kserve["spec"]["predictor"]["containers"][0]
    assert predictor["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"

    dockerfile = (bundle.path / "Dockerfile").read_text()
    base = next(line for line in dockerfile.splitlines() if line.startswith("FROM"))
    assert base.endswith("-slim")
    assert "\nUSER 10001" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/v2/health/ready" in dockerfile
    assert '"--verify"' in dockerfile


def test_the_dashboard_queries_this_model(bundle: ExportedBundle) -> None:
    dashboard = json.loads((bundle.path / "monitoring/dashboard.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert expressions and all('model="digits"' in e for e in expressions)
    assert any("sh_drift_psi" in e for e in expressions) and any("sh_fallback_total" in e for e in expressions)


def test_a_bundle_loads_back_with_its_settings(bundle: ExportedBundle) -> None:
    loaded = load_bundle(bundle.path, digest=bundle.digest)
    assert loaded.artifact == bundle.path / "model" / "model.onnx"
    assert loaded.settings.runtime.intra_op_threads == 1
    config = loaded.model_config()
    assert config.fallback is not None and config.fallback.version == "1.2.0+fallback"
    assert config.settings is not None and config.settings.limits.request_timeout_s == loaded.fallback.primary_timeout_s  # type: ignore[union-attr]


def test_export_refuses_what_it_cannot_ship(
    digits_run: RunDir, reports: Path, tmp_path: Path, bundle: ExportedBundle
) -> None:
    with pytest.raises(UsageError, match=r"torch artifact: bundles carry data, never code.*add export.onnx"):
        export_bundle(digits_run.path, out=tmp_path / "t-1.0.0", variant="torch-eager", reports=reports)
    with pytest.raises(NotFoundError, match="no variant 'nope'"):
        export_bundle(digits_run.path, out=tmp_path / "n-1.0.0", variant="nope", reports=reports)
    with pytest.raises(UsageError, match="not a semantic version"):
        export_bundle(digits_run.path, out=tmp_path / "v", variant="ort-fp32", version="1.2", reports=reports)
    with pytest.raises(UsageError, match="bundles are immutable"):
        export_bundle(digits_run.path, out=bundle.path, variant="ort-fp32", reports=reports)
    assert not list(tmp_path.iterdir())  # nothing half-written was left behind
