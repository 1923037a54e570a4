"""The bundle's trust boundary, tried as an attacker would (issue 12): each attack is refused by name.

Every attack starts from a real exported bundle (tests/bundle/conftest.py) and runs the real harness as
``python -m serving_harness`` in a subprocess, as an operator would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from bundle_support import digits_rows, harness_process, sample, send

from serving_harness.bundle import bundle_files, file_sha256, load_bundle
from serving_harness.errors import BundleError, RuntimeUnavailable
from workbench.bundle.export import ExportedBundle
from workbench.bundle.sign import generate_key_pair, load_signing_key, sign_bundle

pytestmark = pytest.mark.timeout(120)


def _harness(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m serving_harness ARGS`` with the harness installed here (outside every bundle)."""
    command = [sys.executable, "-m", "serving_harness", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, env=env, cwd=cwd)


def _forge(bundle: Path, **changes: Any) -> None:
    """What an attacker does: edit the manifest, then rewrite ``files`` with the sha256 of what is there now."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(changes)
    manifest = {key: value for key, value in manifest.items() if value is not None}
    manifest["files"] = {name: file_sha256(bundle / name) for name in bundle_files(bundle)}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------- 1. a manifest that is not complete


def test_a_manifest_without_format_is_refused_never_served_as_a_model_directory(
    bundle: ExportedBundle, bundle_copy: Path
) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    del manifest["format"]
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    _flip_byte(bundle_copy / "model" / "model.onnx")
    (bundle_copy / "extra.txt").write_text("added after export")

    pinned = _harness("serve", str(bundle_copy), "--port", "0", "--verify", "--digest", bundle.digest)
    assert pinned.returncode == 2
    assert "manifest.json: sha256 differs from the pinned digest" in pinned.stderr

    bare = _harness("serve", str(bundle_copy), "--port", "0")
    assert bare.returncode == 2
    assert "manifest.json: format is missing: not a complete bundle manifest" in bare.stderr

    checked = _harness("verify", str(bundle_copy))
    assert checked.returncode == 1
    assert "FAILED files:" in checked.stdout and "format is missing" in checked.stdout


def test_verify_digest_and_trust_serve_nothing_but_a_bundle(bundle: ExportedBundle, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copyfile(bundle.path / "model" / "model.onnx", plain / "model.onnx")

    refused = _harness("serve", str(plain), "--port", "0", "--digest", bundle.digest)
    assert refused.returncode == 2
    assert "serve a verified bundle only" in refused.stderr and "no manifest.json" in refused.stderr


# ------------------------------------------------------------------------ 2. data, never code


def _factory_naming_a_command(bundle: Path, proof: Path) -> None:
    """serving.json says torch and model/model.json names subprocess:run: the attack of issue 12."""
    serving = json.loads((bundle / "serving.json").read_text())
    serving["runtime"]["name"] = "torch"
    (bundle / "serving.json").write_text(json.dumps(serving))
    description = {
        "format": "torch-factory",
        "factory": "subprocess:run",
        "kwargs": {"args": ["touch", str(proof)]},
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
    }
    (bundle / "model" / "model.json").write_text(json.dumps(description))


def test_a_runtime_that_does_not_match_the_artifact_format_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    proof = tmp_path / "the-command-ran"
    _factory_naming_a_command(bundle_copy, proof)
    _forge(bundle_copy)

    checked = _harness("verify", str(bundle_copy))
    served = _harness("serve", str(bundle_copy), "--port", "0")

    assert checked.returncode == 1 and served.returncode == 2
    for output in (checked.stdout, served.stderr):
        assert "serving.json: runtime 'torch' does not match the manifest's artifact format 'onnx'" in output
    assert not proof.exists()


def test_an_artifact_format_outside_the_allowlist_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    proof = tmp_path / "the-command-ran"
    _factory_naming_a_command(bundle_copy, proof)
    _forge(bundle_copy, artifact="model", artifact_format="torch-factory")

    served = _harness("serve", str(bundle_copy), "--port", "0")

    assert served.returncode == 2
    assert "manifest.json: artifact_format" in served.stderr
    assert "'torch-factory' is not one a bundle may carry (allowed: onnx)" in served.stderr
    assert not proof.exists()


def test_a_flag_cannot_switch_a_bundle_to_another_runtime(bundle: ExportedBundle) -> None:
    served = _harness("serve", str(bundle.path), "--port", "0", "--runtime", "torch")
    assert served.returncode == 2
    assert "runtime 'torch' does not match the manifest's artifact format 'onnx'" in served.stderr


def test_the_torch_runtime_refuses_a_factory_inside_a_bundle(bundle_copy: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from serving_harness.config import RuntimeSettings
    from serving_harness.runtimes.torch import TorchRuntime

    proof = tmp_path / "the-command-ran"
    _factory_naming_a_command(bundle_copy, proof)

    with pytest.raises(RuntimeUnavailable, match=r"model.json: a torch-factory artifact names code to import"):
        TorchRuntime().load(bundle_copy / "model", RuntimeSettings(name="torch"))
    assert not proof.exists()


# ------------------------------------------------------------------------ 3. a closed file set


def test_planted_bytecode_is_refused_even_with_the_original_digest(bundle: ExportedBundle, bundle_copy: Path) -> None:
    cache = bundle_copy / "vendor" / "serving_harness" / "__pycache__"
    cache.mkdir()
    (cache / "server.cpython-311.pyc").write_bytes(b"planted code")

    checked = _harness("verify", str(bundle_copy), "--digest", bundle.digest)

    assert checked.returncode == 1
    assert "vendor/serving_harness/__pycache__/server.cpython-311.pyc: not listed in the manifest" in checked.stdout


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_an_artifact_outside_the_bundle_is_refused(bundle_copy: Path, tmp_path: Path, where: str) -> None:
    outside = tmp_path / "elsewhere" / "other.onnx"
    outside.parent.mkdir()
    shutil.copyfile(bundle_copy / "model" / "model.onnx", outside)
    artifact = str(outside) if where == "absolute" else "../elsewhere/other.onnx"
    _forge(bundle_copy, artifact=artifact)

    checked = _harness("verify", str(bundle_copy))
    served = _harness("serve", str(bundle_copy), "--port", "0")

    assert checked.returncode == 1 and served.returncode == 2
    reason = "must be relative to the bundle" if where == "absolute" else "leaves the bundle ('..')"
    for output in (checked.stdout, served.stderr):
        assert "manifest.json: artifact" in output and f"path {artifact!r} {reason}" in output


def test_a_symbolic_link_out_of_the_bundle_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    outside = tmp_path / "other.onnx"
    model = bundle_copy / "model" / "model.onnx"
    shutil.copyfile(model, outside)  # the same bytes: only the link gives it away
    model.unlink()
    model.symlink_to(outside)

    with pytest.raises(BundleError, match=r"model/model.onnx: a symbolic link"):
        load_bundle(bundle_copy)


def test_a_file_listed_by_an_unnormalised_path_is_refused(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["files"]["model/./model.onnx"] = manifest["files"].pop("model/model.onnx")
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(BundleError, match=r"manifest.json: files.*'model/./model.onnx' is not normalised"):
        load_bundle(bundle_copy)


# ------------------------------------------------------------------------------ 4. signatures


def _public(key: Path) -> Path:
    return key.with_name(key.name + ".pub")


def test_a_signed_bundle_verifies_and_serves_under_trust(signed_bundle: ExportedBundle, signing_key: Path) -> None:
    checked = _harness("verify", str(signed_bundle.path), "--trust", str(_public(signing_key)))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"signed by trusted key {signed_bundle.signed_by}" in checked.stdout

    rows = digits_rows(signed_bundle.path / "golden" / "inputs.npz")
    trust = ("--verify", "--trust", str(_public(signing_key)))
    with harness_process(str(signed_bundle.path), *trust) as (_, url), httpx.Client() as client:
        assert send(client, url, rows[:1]).status_code == 200
        metrics = client.get(f"{url}/metrics").text
    assert sample(metrics, "sh_bundle_unsigned", model="digits", version="2.0.0") == 0
    assert "sh_bundle_unsigned{" in metrics


def test_a_changed_and_rehashed_bundle_is_refused_under_trust(
    signed_bundle: ExportedBundle, signing_key: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(signed_bundle.path, tmp_path / "digits-2.0.0"))
    _flip_byte(copy / "model" / "model.onnx")
    _forge(copy)  # every sha256 true again: only the signature can tell
    assert load_bundle(copy).name == "digits"

    served = _harness("serve", str(copy), "--port", "0", "--trust", str(_public(signing_key)))

    assert served.returncode == 2
    assert "manifest.json: the signature in manifest.sig does not match it (changed after signing)" in served.stderr


def test_an_unsigned_or_foreign_signed_bundle_is_refused_under_trust(
    bundle: ExportedBundle, signed_bundle: ExportedBundle, tmp_path: Path
) -> None:
    other = generate_key_pair(tmp_path / "other-key")

    unsigned = _harness("verify", str(bundle.path), "--trust", str(other.public))
    foreign = _harness("verify", str(signed_bundle.path), "--trust", str(other.public))

    assert unsigned.returncode == 1
    assert f"manifest.sig: missing: the bundle is unsigned, and --trust asks for a signature by key {other.key_id}" in (
        unsigned.stdout
    )
    assert foreign.returncode == 1
    assert f"manifest.sig: signed by key {signed_bundle.signed_by}, not the trusted key {other.key_id}" in (
        foreign.stdout
    )


def test_an_unsigned_bundle_serves_with_a_warning_and_a_metric(bundle_fp32: ExportedBundle) -> None:
    with harness_process(str(bundle_fp32.path)) as (process, url):
        metrics = httpx.get(f"{url}/metrics").text
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert sample(metrics, "sh_bundle_unsigned", model="digits", version="1.3.0") == 1
    warnings = [json.loads(line) for line in stderr.splitlines() if '"warning"' in line]
    assert any("served without a verified signature" in w["message"] for w in warnings)


def test_keys_from_openssl_sign_and_verify(bundle_copy: Path, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl here")
    key, public = tmp_path / "key.pem", tmp_path / "key.pub"
    subprocess.run([openssl, "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True, timeout=30)
    subprocess.run([openssl, "pkey", "-in", str(key), "-pubout", "-out", str(public)], check=True, timeout=30)

    sign_bundle(bundle_copy, load_signing_key(key))

    assert load_bundle(bundle_copy, trust=public).signed_by is not None


# ---------------------------------------------------------------------- 5. the judge and the mount


def test_the_vendored_harness_refuses_to_vouch_for_its_own_bundle(bundle: ExportedBundle, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(bundle.path / "vendor"), "PYTHONDONTWRITEBYTECODE": "1"}

    checked = _harness("verify", str(bundle.path), "--digest", bundle.digest, env=env, cwd=tmp_path)

    assert checked.returncode == 1
    assert "the harness checking it is its own copy" in checked.stdout
    assert not list((bundle.path / "vendor").rglob("__pycache__"))


def _tree(root: Path) -> dict[str, str]:
    return {path.relative_to(root).as_posix(): file_sha256(path) for path in root.rglob("*") if path.is_file()}


def test_a_bundle_serves_from_a_read_only_copy_and_stays_as_shipped(bundle: ExportedBundle, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(bundle.path, tmp_path / "digits-1.2.0"))
    before = _tree(copy)
    subprocess.run(["chmod", "-R", "a-w", str(copy)], check=True, timeout=30)
    rows = digits_rows(copy / "golden" / "inputs.npz")
    try:
        with harness_process(str(copy), "--verify", "--digest", bundle.digest) as (_, url), httpx.Client() as client:
            assert send(client, url, rows[:2]).status_code == 200
        assert _tree(copy) == before  # nothing written, no bytecode: still the bundle that was exported
        assert load_bundle(copy, digest=bundle.digest).name == "digits"
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(copy)], check=True, timeout=30)


# ------------------------------------------------------------------------------ deployment files


def _command(line: str) -> list[str]:
    """The JSON array of a Dockerfile ``CMD [...]`` line (exec form: it must be valid JSON)."""
    parsed: list[str] = json.loads(line.removeprefix("CMD "))
    return parsed


def test_the_deployment_files_of_a_signed_bundle_pass_the_trust_key(signed_bundle: ExportedBundle) -> None:
    key_path = "/etc/serving-harness/trust/bundle.pub"
    dockerfile = (signed_bundle.path / "Dockerfile").read_text()
    command = _command(next(line for line in dockerfile.splitlines() if line.startswith("CMD [")))
    assert command[-2:] == ["--trust", key_path] and "--verify" in command
    assert "PYTHONPATH" not in dockerfile  # the vendored copy never runs in the image
    assert 'pip install --no-cache-dir --no-deps "$HARNESS"' in dockerfile and "PYTHONSAFEPATH=1" in dockerfile

    deployment = yaml.safe_load((signed_bundle.path / "deploy/k8s/deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    kserve = yaml.safe_load((signed_bundle.path / "deploy/kserve/inferenceservice.yaml").read_text())
    predictor = kserve["spec"]["predictor"]
    for spec, container in ((pod, pod["containers"][0]), (predictor, predictor["containers"][0])):
        assert container["command"] == ["python", "-m", "serving_harness"]
        assert container["args"][-2:] == ["--trust", key_path]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "bundle-trust")
        volume = next(v for v in spec["volumes"] if v["name"] == "bundle-trust")
        assert mount["mountPath"] + "/" + volume["configMap"]["items"][0]["path"] == key_path
        assert volume["configMap"] == {**volume["configMap"], "name": "digits-bundle-trust", "optional": False}


def test_the_deployment_files_of_an_unsigned_bundle_say_so(bundle: ExportedBundle) -> None:
    dockerfile = (bundle.path / "Dockerfile").read_text()
    command = _command(next(line for line in dockerfile.splitlines() if line.startswith("CMD [")))
    assert "--trust" not in command and "Unsigned" in dockerfile
    deployment = yaml.safe_load((bundle.path / "deploy/k8s/deployment.yaml").read_text())
    assert "--trust" not in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from workbench.cli import app

    private, public = tmp_path / "keys" / "bundle", tmp_path / "keys" / "bundle.pub"
    made = CliRunner().invoke(app, ["keygen", str(private)])
    first = private.read_bytes()
    again = CliRunner().invoke(app, ["keygen", str(private)])

    assert made.exit_code == 0, made.output
    assert private.stat().st_mode & 0o777 == 0o600
    assert "BEGIN PUBLIC KEY" in public.read_text() and "key id" in made.output
    assert again.exit_code != 0 and "exists: keys are never overwritten" in str(again.exception)
    assert private.read_bytes() == first
