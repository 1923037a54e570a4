"""From a converter's ONNX file and its .npz to a served bundle, as a newcomer does it with the CLI:
``workbench init`` → ``validate`` → ``run`` → ``select`` → ``export`` → ``verify`` → ``serve`` → an OIP client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import yaml

pytest.importorskip("skl2onnx")

from converter_models import own_model_dir

__all__ = ["own_model_dir"]


def _env() -> dict[str, str]:
    """This environment without PYTHONPATH: what is beside a recipe must import without it."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def workbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "workbench.cli", *args]
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=280, check=False)


@pytest.fixture
def project(own_model_dir: Path, tmp_path: Path) -> Path:
    """A user's folder: the converter's model and test split, nothing else."""
    for name in ("mlp.onnx", "mlp_zipmap.onnx", "test.npz"):
        (tmp_path / name).write_bytes((own_model_dir / name).read_bytes())
    return tmp_path


@pytest.mark.slow  # a real run or served load step: `make test` runs it, `make test-fast` skips it
def test_init_writes_a_recipe_that_runs_unedited(project: Path) -> None:
    written = workbench("init", "mlp.onnx", "--data", "test.npz", "--out", "recipe.yaml", cwd=project)
    assert written.returncode == 0, written.stderr
    recipe = yaml.safe_load((project / "recipe.yaml").read_text())
    assert recipe["data"]["metric"] == {"name": "accuracy", "output": "label"}
    assert set(recipe["search"]["pipelines"]) == {"fp32", "int8-dynamic", "graph-optimized"}

    ran = workbench("run", "recipe.yaml", "--reports", "reports", cwd=project)

    assert ran.returncode == 0, ran.stderr
    assert "calibrat" not in ran.stderr  # no static quantization step, no calibration warning
    (run,) = (project / "reports" / "mlp").iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    record = json.loads((run / "variants" / "int8-dynamic.json").read_text())
    assert record["status"] == "ok" and record["quality"]["output"] == "label"
    assert record["quality"]["outputs"]["label"]["mismatches"] == 0  # integer outputs are compared exactly


@pytest.mark.slow  # a real run or served load step: `make test` runs it, `make test-fast` skips it
def test_init_keeps_the_tensor_outputs_of_a_zipmap_model(project: Path) -> None:
    written = workbench("init", "mlp_zipmap.onnx", "--data", "test.npz", "--out", "zipmap.yaml", cwd=project)
    assert written.returncode == 0, written.stderr
    recipe = yaml.safe_load((project / "zipmap.yaml").read_text())
    assert recipe["model"]["options"] == {"outputs": ["output_label"]}
    assert workbench("validate", "zipmap.yaml", cwd=project).returncode == 0


def _recipe(project: Path, **data: object) -> Path:
    recipe = {
        "name": "own",
        "model": {"source": "onnx", "path": "mlp.onnx"},
        "data": {"source": "npz", "path": "test.npz", **data},
        "search": {"pipelines": {"fp32": []}},
        "measure": {"batch_sizes": [8], "warmup_iters": 1, "trials": 2, "trial_duration_s": 0.05},
    }
    folder = project / "recipes"
    folder.mkdir(exist_ok=True)
    path = folder / "own.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.slow  # a real run or served load step: `make test` runs it, `make test-fast` skips it
def test_validate_catches_a_missing_file_and_an_unimportable_metric(project: Path) -> None:
    missing = _recipe(project, path="nowhere.npz")
    refused = workbench("validate", str(missing), cwd=project)
    assert refused.returncode == 2 and "data.path" in refused.stderr and "nowhere.npz" in refused.stderr

    broken = _recipe(project, metric="no_such_metrics:agreement")
    refused = workbench("validate", str(broken), cwd=project)
    assert refused.returncode == 2 and "data.metric" in refused.stderr and "no_such_metrics" in refused.stderr

    zipmap = _recipe(project)
    zipmap.write_text(zipmap.read_text().replace("path: mlp.onnx", "path: mlp_zipmap.onnx"))
    refused = workbench("validate", str(zipmap), cwd=project)
    assert refused.returncode == 2 and "output_probability" in refused.stderr and "zipmap" in refused.stderr


@pytest.mark.slow  # a real run or served load step: `make test` runs it, `make test-fast` skips it
def test_a_metric_beside_the_recipe_imports_without_pythonpath(project: Path) -> None:
    recipe = _recipe(project, metric={"name": "label_agreement:agreement", "output": "label"})
    (recipe.parent / "label_agreement.py").write_text(
        "import numpy as np\n\n\ndef agreement(outputs, reference, labels):\n"
        "    (name,) = outputs  # only the output the recipe names\n"
        "    return float(np.mean(outputs[name] == labels))\n"
    )

    assert workbench("validate", str(recipe), cwd=project).returncode == 0
    ran = workbench("run", str(recipe), "--reports", "reports", cwd=project)

    assert ran.returncode == 0, ran.stderr
    (run,) = (project / "reports" / "own").iterdir()
    quality = json.loads((run / "variants" / "fp32.json").read_text())["quality"]
    assert quality["metric"] == "agreement" and quality["output"] == "label" and quality["value"] > 0.5


@pytest.mark.slow
def test_run_select_export_verify_serve_and_an_oip_round_trip_match_the_source(project: Path) -> None:
    assert workbench("init", "mlp.onnx", "--data", "test.npz", "--out", "recipe.yaml", cwd=project).returncode == 0
    assert workbench("run", "recipe.yaml", "--reports", "reports", cwd=project).returncode == 0
    selected = workbench("select", "latest", "--reports", "reports", cwd=project)
    assert selected.returncode == 0, selected.stderr
    exported = workbench(
        "export", "latest", "--variant", "fp32", "--out", "bundles/mlp-0.1.0", "--reports", "reports", cwd=project
    )
    assert exported.returncode == 0, exported.stderr
    bundle = project / "bundles" / "mlp-0.1.0"
    verified = subprocess.run(
        [sys.executable, "-m", "serving_harness", "verify", str(bundle)], env=_env(), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr

    with np.load(project / "test.npz") as archive:
        rows = archive["X"][:16]
    with _serving(bundle) as url:
        body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]}
        answer = httpx.post(f"{url}/v2/models/mlp/infer", json=body, timeout=30).json()

    served = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer["outputs"]}
    session = ort.InferenceSession(str(project / "mlp.onnx"), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"X": rows})
    assert {o["datatype"] for o in answer["outputs"]} == {"INT64", "FP32"}
    np.testing.assert_array_equal(served["label"], label)
    np.testing.assert_allclose(served["probabilities"], probabilities, atol=1e-6)


def test_the_server_does_not_report_ready_for_a_zipmap_model(project: Path) -> None:
    command = [sys.executable, "-m", "serving_harness", "serve", str(project / "mlp_zipmap.onnx"), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        url = _listening(process)
        metadata = _settled(f"{url}/v2/models/mlp_zipmap")
        ready = httpx.get(f"{url}/v2/health/ready", timeout=5)
    finally:
        process.kill()
        _, log = process.communicate(timeout=10)
    assert metadata["state"] == "UNAVAILABLE" and ready.status_code == 503
    assert "output_probability" in metadata["reason"] and "'zipmap': False" in metadata["reason"]
    assert "model failed to load" in log and "output_probability" in log


def _listening(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()  # the harness's first line: {"event": "listening", "url": ...}
    return str(json.loads(line)["url"])


def _settled(url: str, attempts: int = 100) -> dict[str, object]:
    """The model's metadata once it has left LOADING (bounded polling)."""
    for _ in range(attempts):
        metadata: dict[str, object] = httpx.get(url, timeout=5).json()
        if metadata.get("state") != "LOADING":
            return metadata
        time.sleep(0.1)
    raise AssertionError(f"{url} still loading")


@contextmanager
def _serving(bundle: Path) -> Iterator[str]:
    """``python -m serving_harness serve BUNDLE``: its URL once ready (bounded wait); killed on the way out."""
    command = [sys.executable, "-m", "serving_harness", "serve", str(bundle), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        url = _listening(process)
        for _ in range(100):  # a bundle this small loads in well under a second
            if httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                break
            time.sleep(0.1)
        yield url
    finally:
        process.kill()
        process.communicate(timeout=10)
