"""NaN and infinities through a real server: binary and JSON both ways, read back as a standard client does."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import serving_support as support
from serving_support import infer_json, metric_value

from serving_harness.model import ModelConfig
from serving_harness.protocol.codec import HEADER_LENGTH, decode_infer_response, encode_infer_request

# 1e39 does not fit FP32: as binary it is +inf; NaN, -inf and an ordinary number ride along.
with np.errstate(over="ignore"):
    ODD = np.array([[1e39, math.nan, -math.inf, 1.5]], dtype=np.float32)


@pytest.fixture(scope="module")
def url(models_dir: Path) -> Iterator[str]:
    with support.running_server([ModelConfig("identity", models_dir / "identity.onnx")]) as served:
        yield served


def _infer(url: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/identity/infer", content=content, headers=headers, timeout=10.0)


def _tritonclient_reads(body: bytes) -> np.ndarray:
    """What tritonclient.http's InferResult.as_numpy does with JSON ``data``: np.array(data, dtype)."""
    output = json.loads(body)["outputs"][0]
    return np.array(output["data"], dtype=np.float32).reshape(output["shape"])


def test_binary_nonfinite_inputs_come_back_in_json_as_strings_a_client_reads_back(url: str) -> None:
    content, headers = encode_infer_request({"x": ODD}, binary_data=True)

    response = _infer(url, content, headers)

    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == ["Infinity", "NaN", "-Infinity", 1.5]  # never null
    np.testing.assert_array_equal(_tritonclient_reads(response.content), ODD)  # equal_nan by default
    _, arrays = decode_infer_response(response.content, None)
    np.testing.assert_array_equal(arrays["y"], ODD)


def test_binary_output_carries_nonfinite_values_bit_for_bit(url: str) -> None:
    content, headers = encode_infer_request({"x": ODD}, binary_data=True, binary_data_output=True)

    response = _infer(url, content, headers)

    assert response.status_code == 200
    _, arrays = decode_infer_response(response.content, int(response.headers[HEADER_LENGTH]))
    assert arrays["y"].tobytes() == ODD.tobytes()


def test_json_requests_may_spell_nonfinite_values_as_strings(url: str) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": ["NaN", "Infinity", "-Infinity", 2]}]}

    response = httpx.post(f"{url}/v2/models/identity/infer", json=body)

    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == ["NaN", "Infinity", "-Infinity", 2.0]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1e39, 0, 0, 0], "outside the range of FP32"),  # would silently become +inf
        ([1e39, "NaN", 0, 0], "outside the range of FP32"),
        (["nan", 0, 0, 0], "'nan' is not FP32"),  # only the three JSON spellings
        (["1", "inf", "x", "y"], "is not FP32"),
        ([True, "NaN", 0, 0], "is not FP32"),
    ],
)
def test_json_values_that_are_no_float_or_overflow_it_are_400(url: str, data: list[object], message: str) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": data}]}

    response = httpx.post(f"{url}/v2/models/identity/infer", json=body)

    assert response.status_code == 400
    assert message in response.json()["error"]


def test_nonfinite_inputs_and_outputs_are_counted(models_dir: Path) -> None:
    with support.running_server([ModelConfig("identity", models_dir / "identity.onnx")]) as url:
        content, headers = encode_infer_request({"x": ODD}, binary_data=True)
        assert _infer(url, content, headers).status_code == 200
        assert httpx.post(f"{url}/v2/models/identity/infer", json=infer_json(np.ones((1, 4), np.float32))).is_success
        metrics = httpx.get(f"{url}/metrics").text

    assert metric_value(metrics, "sh_nonfinite_values_total", model="identity", direction="input") == 3
    assert metric_value(metrics, "sh_nonfinite_values_total", model="identity", direction="output") == 3


def test_tritonclient_reads_back_the_same_nonfinite_values(url: str) -> None:
    http = pytest.importorskip("tritonclient.http")
    client = http.InferenceServerClient(url=url.removeprefix("http://"))
    sent = http.InferInput("x", list(ODD.shape), "FP32")
    sent.set_data_from_numpy(ODD, binary_data=True)

    as_json = client.infer("identity", [sent], outputs=[http.InferRequestedOutput("y", binary_data=False)])
    as_binary = client.infer("identity", [sent], outputs=[http.InferRequestedOutput("y", binary_data=True)])

    np.testing.assert_array_equal(as_json.as_numpy("y"), ODD)  # Triton's own client decodes the JSON strings
    np.testing.assert_array_equal(as_binary.as_numpy("y"), ODD)
