"""The command line in a real subprocess: the listening line, serve DIR, settings, torch, and the SIGTERM drain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import serving_support as support
from serving_support import infer_json

ONE = np.ones((1, 4), dtype=np.float32)


def test_sigterm_drains_the_in_flight_request_then_exits_0(models_dir: Path) -> None:
    # A lone request waits a full second for its batch: it is in flight when SIGTERM arrives.
    args = ["--model", str(models_dir / "double.onnx"), "--max-batch-size", "8", "--max-queue-delay-us", "1000000"]
    with support.harness_process(*args) as (process, url):
        result: dict[str, Any] = {}
        client = threading.Thread(
            target=lambda: result.update(
                r=httpx.post(f"{url}/v2/models/double/infer", json=infer_json(ONE), timeout=20)
            )
        )
        client.start()
        support.wait_for_metric(url, "sh_queue_depth", 1.0, model="double")
        process.send_signal(signal.SIGTERM)
        client.join(timeout=20)
        exit_code = process.wait(timeout=20)
        stderr = process.stderr.read() if process.stderr else ""

    assert result["r"].status_code == 200
    assert result["r"].json()["outputs"][0]["data"] == [3.0] * 4
    assert exit_code == 0
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert {"listening", "model ready", "models closed"} <= {r["message"] for r in records}


def test_serve_a_model_directory_with_serving_json(models_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes((models_dir / "affine.onnx").read_bytes())
    (tmp_path / "serving.json").write_text(json.dumps({"batching": {"max_batch_size": 4}, "cache_size": 8}))
    # no manifest.json: a directory with one is a bundle (tests/bundle/test_trust.py)
    flags = ("--settings-json", '{"instances": 2}', "--name", "digits", "--model-version", "3")

    with support.harness_process(str(tmp_path), *flags) as (_, url):
        metadata = httpx.get(f"{url}/v2/models/digits").json()
        response = httpx.post(f"{url}/v2/models/digits/versions/3/infer", json=infer_json(ONE))
        httpx.post(f"{url}/v2/models/digits/infer", json=infer_json(ONE))
        metrics = httpx.get(f"{url}/metrics").text

    assert metadata["versions"] == ["3"]
    assert response.json()["outputs"][1]["data"] == [3.0] * 4
    assert support.metric_value(metrics, "sh_cache_hits_total", model="digits") == 1


def test_cli_flags_and_auth_token_from_the_environment(models_dir: Path) -> None:
    args = ["--model", str(models_dir / "double.onnx"), "--name", "digits", "--instances", "2", "--threads", "1"]
    with support.harness_process(*args, env={**os.environ, "SH_AUTH_TOKEN": "tok"}) as (_, url):
        assert httpx.get(f"{url}/v2/models/digits").status_code == 401
        headers = {"Authorization": "Bearer tok"}
        assert httpx.get(f"{url}/v2/models/digits", headers=headers).json()["name"] == "digits"


def test_bad_command_line_exits_2(tmp_path: Path) -> None:
    missing = subprocess.run(
        [sys.executable, "-m", "serving_harness", "serve", "--model", str(tmp_path / "nope.onnx")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr


def test_torch_artifact_directory_is_served_with_the_torch_runtime(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    (tmp_path / "sh_test_factory.py").write_text("import torch\n\ndef make():\n    return torch.nn.Linear(4, 2)\n")
    artifact = tmp_path / "linear"
    artifact.mkdir()
    module = torch.nn.Linear(4, 2)
    torch.save(module.state_dict(), artifact / "weights.pt")
    spec = {
        "format": "torch-factory",
        "factory": "sh_test_factory:make",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    }
    (artifact / "model.json").write_text(json.dumps(spec))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)

    with support.harness_process("--model", str(artifact), env={**os.environ, "PYTHONPATH": str(tmp_path)}) as (_, url):
        metadata = httpx.get(f"{url}/v2/models/linear").json()
        body = httpx.post(f"{url}/v2/models/linear/infer", json=infer_json(x)).json()

    assert metadata["platform"] == "pytorch_eager"
    expected = module(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(np.array(body["outputs"][0]["data"]).reshape(2, 2), expected, rtol=1e-5)
