"""Issue 17's per-request work on the REST hot path, through a real server: each tensor's values are looked at for
NaN and infinities once, the infer routes skip Starlette's router yet answer every odd path as before, and the
in-process overhead benchmark runs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import serving_support as support

from serving_harness import model as served_model
from serving_harness.model import ModelConfig
from serving_harness.protocol import codec
from serving_harness.protocol.codec import HEADER_LENGTH, encode_infer_request

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
ROW = np.array([[1.0, np.nan, np.inf, 2.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def url(models_dir: Path) -> Iterator[str]:
    models = [ModelConfig("identity", models_dir / "identity.onnx"), ModelConfig("double", models_dir / "double.onnx")]
    with support.running_server(models) as served:
        yield served


@pytest.fixture
def looked_at(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Every array whose values the server counts NaN and infinities in (kept, so ids stay unique)."""
    seen: list[np.ndarray] = []
    count = codec.nonfinite_count

    def spy(array: np.ndarray) -> int:
        seen.append(array)
        return count(array)

    monkeypatch.setattr(codec, "nonfinite_count", spy)
    monkeypatch.setattr(served_model, "nonfinite_count", spy)
    return seen


def _metrics(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics").text
    return tuple(  # type: ignore[return-value]
        support.metric_value(text, "sh_nonfinite_values_total", model="identity", direction=d)
        for d in ("input", "output")
    )


@pytest.mark.parametrize("binary_input", [False, True], ids=["json", "binary"])
def test_each_tensor_is_looked_at_once_for_nonfinite_values(
    url: str, looked_at: list[np.ndarray], binary_input: bool
) -> None:
    before = _metrics(url)
    content, headers = encode_infer_request({"x": ROW}, binary_data=binary_input)  # JSON spells "NaN", "Infinity"
    looked_at.clear()  # the client's encoder above looks too
    response = httpx.post(f"{url}/v2/models/identity/infer", content=content, headers=headers)

    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [1.0, "NaN", "Infinity", 2.0]
    assert len(looked_at) == 2  # the input once (while decoding, or before the model runs), the output once
    assert len({id(array) for array in looked_at}) == 2
    after = _metrics(url)
    assert (after[0] - before[0], after[1] - before[1]) == (2, 2)  # counted as before: both ways


def test_binary_outputs_and_finite_json_answers_are_unchanged(url: str) -> None:
    content, headers = encode_infer_request({"x": ROW}, binary_data=True, outputs=["y"], binary_data_output=True)
    response = httpx.post(f"{url}/v2/models/identity/infer", content=content, headers=headers)
    header_length = int(response.headers[HEADER_LENGTH])
    np.testing.assert_array_equal(np.frombuffer(response.content[header_length:], np.float32), ROW.ravel())

    finite = httpx.post(f"{url}/v2/models/double/infer", json=support.infer_json(np.ones((1, 4), np.float32)))
    assert finite.json()["outputs"][0]["data"] == [3.0, 3.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v2/models/double/infer", 200),
        ("POST", "/v2/models/double/versions/1/infer", 200),
        ("POST", "/v2/models/double/versions/2/infer", 404),
        ("POST", "/v2/models/nothing/infer", 404),
        ("POST", "/v2/models//infer", 404),
        ("POST", "/v2/models/infer", 405),  # the metadata route, with "infer" for a name
        ("POST", "/v2/models/double/versions//infer", 404),
        ("POST", "/v2/models/double/x/1/infer", 404),
        ("POST", "/v2/models/double/infer/extra", 404),
        ("GET", "/v2/models/double/infer", 405),
        ("PUT", "/v2/models/double/versions/1/infer", 405),
    ],
)
def test_infer_paths_answer_as_the_router_would(url: str, method: str, path: str, status: int) -> None:
    body = support.infer_json(np.ones((1, 4), np.float32))
    response = httpx.request(method, url + path, json=body)
    assert response.status_code == status
    if status != 200:
        assert "error" in response.json()  # OIP form, whichever way it was routed


def test_the_overhead_benchmark_runs() -> None:
    command = [sys.executable, str(BENCHMARKS / "rest_overhead.py"), "--requests", "40", "--repeats", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "harness, batching off" in done.stdout and "bare Starlette route" in done.stdout
