"""The bundle where it lands: a fresh venv with the bundle's requirements.txt and nothing of the workbench.

``python -m venv`` + ``pip install -r requirements.txt`` (from PyPI: about 40 s here) + the harness
installed outside the bundle (as the image's pinned install is; here the lab's own source), which
verifies the bundle, serves it to a short load, and refuses a tampered copy. The bundle's vendored
copy never runs: it is data.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from bundle_support import digits_rows, infer_body, sample, wait_ready

import serving_harness
from workbench.bundle.export import ExportedBundle

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def serving_venv(tmp_path_factory: pytest.TempPathFactory, bundle: ExportedBundle) -> Path:
    """A venv with only the bundle's pinned requirements installed."""
    venv = tmp_path_factory.mktemp("serving-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", "requirements.txt"]
    done = subprocess.run(install, cwd=bundle.path, capture_output=True, text=True, timeout=150)
    if done.returncode != 0:
        pytest.fail(f"pip install -r requirements.txt failed: {done.stderr[-2000:]}")
    _install_harness(python)
    return python


def _install_harness(python: Path) -> Path:
    """The harness in the venv's site-packages: installed outside the bundle, never its vendored copy."""
    where = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    target = Path(where.stdout.strip()) / "serving_harness"
    shutil.copytree(Path(serving_harness.__file__).parent, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _bundle_env(bundle: Path) -> dict[str, str]:
    """Run as the Dockerfile does (from the bundle directory, nothing imported from it), nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "SH_"))}
    return {**env, "PYTHONSAFEPATH": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def test_the_venv_has_the_serving_stack_and_nothing_of_the_lab(serving_venv: Path, bundle: ExportedBundle) -> None:
    code = "import importlib.util as u; print(json.dumps({m: u.find_spec(m) is not None for m in MODULES}))"
    modules = ["onnxruntime", "uvicorn", "serving_harness", "workbench", "torch", "onnx", "locust"]
    done = subprocess.run(
        [str(serving_venv), "-c", f"import json; MODULES = {modules!r}; {code}"],
        env=_bundle_env(bundle.path), cwd=bundle.path, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    found = json.loads(done.stdout)
    assert found == {"onnxruntime": True, "uvicorn": True, "serving_harness": True, "workbench": False,
                     "torch": False, "onnx": False, "locust": False}  # fmt: skip
    where = subprocess.run(
        [str(serving_venv), "-c", "import serving_harness; print(serving_harness.__file__)"],
        env=_bundle_env(bundle.path), cwd=bundle.path, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert not Path(where.stdout.strip()).is_relative_to(bundle.path)  # the installed harness, not vendor/


def test_verify_passes_in_the_fresh_venv(serving_venv: Path, bundle: ExportedBundle) -> None:
    done = subprocess.run(
        [str(serving_venv), "-m", "serving_harness", "verify", str(bundle.path), "--digest", bundle.digest],
        env=_bundle_env(bundle.path), cwd=bundle.path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok     golden:" in done.stdout and "ok     golden fallback:" in done.stdout


def test_it_serves_a_short_load_from_the_fresh_venv(serving_venv: Path, bundle: ExportedBundle) -> None:
    command = [str(serving_venv), "-m", "serving_harness", "serve", str(bundle.path), "--port", "0", "--verify"]
    server = subprocess.Popen(
        command, env=_bundle_env(bundle.path), cwd=bundle.path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        url = json.loads(server.stdout.readline())["url"]
        wait_ready(url)
        statuses = _load(url, digits_rows(bundle.path / "golden" / "inputs.npz"), requests=400, callers=4)
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()

    assert statuses == Counter({200: 400})
    assert sample(metrics, "sh_requests_total", model="digits", version="1.2.0", status="200") == 400
    assert sample(metrics, "sh_drift_window_rows", version="1.2.0") == 400
    assert server.returncode == 0  # drained and exited cleanly on SIGTERM


def test_a_tampered_bundle_is_refused_in_the_fresh_venv(
    serving_venv: Path, bundle: ExportedBundle, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(bundle.path, tmp_path / "digits-1.2.0"))
    model = copy / "model" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    model.write_bytes(bytes(data))

    done = subprocess.run(
        [str(serving_venv), "-m", "serving_harness", "serve", str(copy), "--port", "0"],
        env=_bundle_env(copy), cwd=copy, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "model/model.onnx: sha256 differs from the manifest" in done.stderr


def _load(url: str, rows: object, *, requests: int, callers: int) -> Counter[int]:
    """``requests`` requests from ``callers`` threads, each with its own keep-alive connection."""
    import numpy as np

    data = np.asarray(rows)

    def caller(index: int) -> list[int]:
        with httpx.Client() as client:
            return [
                client.post(f"{url}/v2/models/digits/infer", json=infer_body(data[i % len(data)][None])).status_code
                for i in range(index, requests, callers)
            ]

    with ThreadPoolExecutor(callers) as pool:
        return Counter(s for batch in pool.map(caller, range(callers)) for s in batch)
