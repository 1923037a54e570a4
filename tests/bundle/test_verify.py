"""``verify`` and ``load_bundle``: checksums of every file, golden outputs on this machine, refusals by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serving_harness.bundle import BundleError, load_bundle, read_manifest, verify_bundle
from workbench.bundle.export import ExportedBundle
from workbench.bundle.manifest import seal


def test_an_untouched_bundle_passes_every_check(bundle: ExportedBundle) -> None:
    report = verify_bundle(bundle.path, digest=bundle.digest)
    assert report.ok, report.checks
    assert [c.name for c in report.checks] == ["files", "golden", "golden fallback"]
    assert report.digest == bundle.digest


@pytest.mark.parametrize("name", ["model/model.onnx", "serving.json", "vendor/serving_harness/protocol/rest.py"])
def test_a_changed_file_is_refused_by_name(bundle_copy: Path, name: str) -> None:
    path = bundle_copy / name
    path.write_bytes(path.read_bytes() + b" ")

    with pytest.raises(BundleError, match=rf"{name}: sha256 differs"):
        load_bundle(bundle_copy)
    report = verify_bundle(bundle_copy)
    assert not report.ok
    assert [c.name for c in report.checks] == ["files"]  # a tampered model is never loaded


def test_a_missing_file_is_refused_by_name(bundle_copy: Path) -> None:
    (bundle_copy / "golden" / "outputs.npz").unlink()
    with pytest.raises(BundleError, match=r"golden/outputs.npz: missing"):
        load_bundle(bundle_copy)


def test_an_added_file_is_refused_by_name(bundle_copy: Path) -> None:
    (bundle_copy / "model" / "extra.onnx").write_bytes(b"not from the export")
    with pytest.raises(BundleError, match=r"model/extra.onnx: not listed"):
        load_bundle(bundle_copy)


def test_bytecode_in_the_bundle_is_refused_like_any_unlisted_file(bundle_copy: Path) -> None:
    cache = bundle_copy / "vendor" / "serving_harness" / "__pycache__"
    cache.mkdir()
    (cache / "app.cpython-311.pyc").write_bytes(b"\0")
    with pytest.raises(BundleError, match=r"__pycache__/app.cpython-311.pyc: not listed in the manifest"):
        load_bundle(bundle_copy)


def test_a_pinned_digest_catches_an_edited_manifest(bundle: ExportedBundle, bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["slo"]["latency_budget_ms_p99"] = 1000.0  # relaxing the alerts leaves every file hash intact
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))

    assert load_bundle(bundle_copy).manifest.slo.latency_budget_ms_p99 == 1000.0
    with pytest.raises(BundleError, match="differs from the pinned digest"):
        load_bundle(bundle_copy, digest=bundle.digest)


def test_golden_outputs_that_do_not_match_fail_the_check(bundle_copy: Path) -> None:
    golden = bundle_copy / "golden" / "outputs.npz"
    with np.load(golden, allow_pickle=False) as data:
        logits = np.array(data["logits"])
    logits[3, 0] += 1.0  # beyond the int8 tolerance (1% of the largest logit)
    np.savez(golden, logits=logits)
    manifest = read_manifest(bundle_copy)
    seal(bundle_copy, manifest.model_dump(mode="json", exclude={"files"}))  # re-sealed: only the golden check can tell

    report = verify_bundle(bundle_copy)
    failed = [c for c in report.checks if not c.ok]
    assert [c.name for c in failed] == ["golden"]
    assert "output 'logits': 1 values beyond" in failed[0].detail


def test_the_command_line_exit_codes(bundle: ExportedBundle, bundle_copy: Path) -> None:
    ok = _harness("verify", str(bundle.path), "--digest", bundle.digest)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok     golden:" in ok.stdout

    (bundle_copy / "serving.json").write_text("{}")
    bad = _harness("verify", str(bundle_copy))
    assert bad.returncode == 1
    assert "serving.json: sha256 differs" in bad.stdout

    refused = _harness("serve", str(bundle_copy), "--port", "0")
    assert refused.returncode == 2
    assert "refusing bundle" in refused.stderr and "serving.json" in refused.stderr


def _harness(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serving_harness", *args], capture_output=True, text=True, timeout=120)
