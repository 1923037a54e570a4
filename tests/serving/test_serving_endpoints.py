"""Every OIP v2 endpoint of a real server on 127.0.0.1: health, metadata, JSON and binary inference, metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import serving_support as support
from serving_support import BIAS, infer_json, metric_value

from serving_harness.config import ServingConfig
from serving_harness.model import ModelConfig
from serving_harness.protocol.codec import HEADER_LENGTH, decode_infer_response, encode_infer_request

NAMES = ("double", "affine", "int64", "sequence", "text", "fixed")


@pytest.fixture(scope="module")
def url(models_dir: Path) -> Iterator[str]:
    models = [ModelConfig(name=n, path=models_dir / f"{n}.onnx", version="1") for n in NAMES]
    with support.running_server(models, ServingConfig()) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=10.0) as http:
        yield http


def test_health_and_server_metadata(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    metadata = client.get("/v2").json()
    assert metadata["name"] == "serving_harness"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_has_inputs_outputs_and_batch_axis(client: httpx.Client) -> None:
    metadata = client.get("/v2/models/affine").json()

    assert metadata["name"] == "affine"
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in metadata["outputs"]] == ["plus", "times"]
    assert client.get("/v2/models/affine/versions/1").json() == metadata


def test_model_ready_and_versions(client: httpx.Client) -> None:
    assert client.get("/v2/models/double/ready").json() == {"name": "double", "ready": True}
    assert client.get("/v2/models/double/versions/1/ready").status_code == 200
    assert client.get("/v2/models/double/versions/7/ready").status_code == 404
    assert client.get("/v2/models/nope/ready").status_code == 404


def test_json_infer_echoes_id_and_returns_outputs(client: httpx.Client) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)

    response = client.post("/v2/models/double/infer", json=infer_json(x, id="req-7"))

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "req-7"
    assert body["model_name"] == "double"
    assert body["model_version"] == "1"
    (output,) = body["outputs"]
    assert output["name"] == "y"
    assert output["datatype"] == "FP32"
    assert output["shape"] == [2, 4]
    np.testing.assert_allclose(output["data"], (2 * x + 1).ravel())


def test_versioned_infer_route(client: httpx.Client) -> None:
    x = np.ones((1, 4), dtype=np.float32)
    assert client.post("/v2/models/double/versions/1/infer", json=infer_json(x)).status_code == 200
    assert client.post("/v2/models/double/versions/2/infer", json=infer_json(x)).status_code == 404


def test_nested_json_data_is_accepted(client: httpx.Client) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}]}

    response = client.post("/v2/models/affine/infer", json=body)

    plus = np.array(response.json()["outputs"][0]["data"], dtype=np.float32)
    np.testing.assert_allclose(plus, (np.arange(1, 9, dtype=np.float32).reshape(2, 4) + BIAS).ravel())


def test_requested_outputs_only(client: httpx.Client) -> None:
    x = np.ones((1, 4), dtype=np.float32)

    body = client.post("/v2/models/affine/infer", json=infer_json(x, outputs=[{"name": "times"}])).json()

    assert [o["name"] for o in body["outputs"]] == ["times"]
    assert body["outputs"][0]["data"] == [3.0] * 4


def test_int64_model(client: httpx.Client) -> None:
    ids = np.array([[1, 2, 3], [2**40, 0, -5]], dtype=np.int64)

    body = client.post("/v2/models/int64/infer", json=infer_json(ids, name="ids", datatype="INT64")).json()

    assert body["outputs"][0]["datatype"] == "INT64"
    assert body["outputs"][0]["data"] == (ids + 1).ravel().tolist()


def test_binary_request_and_binary_response(client: httpx.Client) -> None:
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    content, headers = encode_infer_request({"x": x}, binary_data=True, binary_data_output=True)

    response = client.post("/v2/models/affine/infer", content=content, headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    doc, outputs = decode_infer_response(response.content, int(response.headers[HEADER_LENGTH]))
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 3 * 4 * 4}
    np.testing.assert_array_equal(outputs["plus"], x + BIAS)
    np.testing.assert_array_equal(outputs["times"], x * 3)


def test_binary_output_per_output_parameter(client: httpx.Client) -> None:
    x = np.ones((2, 4), dtype=np.float32)
    body = infer_json(x, outputs=[{"name": "plus", "parameters": {"binary_data": True}}, {"name": "times"}])

    response = client.post("/v2/models/affine/infer", json=body)

    doc, outputs = decode_infer_response(response.content, int(response.headers[HEADER_LENGTH]))
    assert "data" not in doc["outputs"][0] and doc["outputs"][1]["data"] == [3.0] * 8
    np.testing.assert_array_equal(outputs["plus"], x + BIAS)


def test_binary_request_with_json_response(client: httpx.Client) -> None:
    ids = np.array([[7, 8, 9]], dtype=np.int64)
    content, headers = encode_infer_request({"ids": ids}, binary_data=True)

    response = client.post("/v2/models/int64/infer", content=content, headers=headers)

    assert response.headers["content-type"] == "application/json"
    assert response.json()["outputs"][0]["data"] == [8, 9, 10]


def test_bytes_model_round_trip(client: httpx.Client) -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["héllo", "b"]}]}

    response = client.post("/v2/models/text/infer", json=body)

    assert response.json()["outputs"][0]["data"] == ["héllo", "b"]


def test_model_without_batch_axis_runs_unbatched(client: httpx.Client) -> None:
    x = np.ones((1, 4), dtype=np.float32)
    body = client.post("/v2/models/fixed/infer", json=infer_json(x)).json()
    assert body["outputs"][0]["data"] == [2.0] * 4


def test_sequence_model_keeps_each_length(client: httpx.Client) -> None:
    x = np.ones((2, 5), dtype=np.float32)
    body = client.post("/v2/models/sequence/infer", json=infer_json(x)).json()
    assert body["outputs"][0]["shape"] == [2, 5]


def test_server_timing_header(client: httpx.Client) -> None:
    response = client.post("/v2/models/double/infer", json=infer_json(np.ones((1, 4), np.float32)))

    parts = dict(part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
    assert set(parts) == {"queue", "compute"}
    assert all(float(value) >= 0 for value in parts.values())


def test_metrics_move_as_requests_are_served(client: httpx.Client) -> None:
    before = client.get("/metrics").text
    x = np.ones((1, 4), dtype=np.float32)
    for _ in range(3):
        client.post("/v2/models/double/infer", json=infer_json(x))
    client.post("/v2/models/double/infer", json={"inputs": []})

    after = client.get("/metrics").text

    def moved(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert moved("sh_requests_total", model="double", status="200") == 3
    assert moved("sh_requests_total", model="double", status="400") == 1
    assert moved("sh_request_duration_seconds_count", model="double") == 4
    assert moved("sh_queue_duration_seconds_count", model="double") == 3
    assert moved("sh_compute_duration_seconds_count", model="double") == 3
    assert moved("sh_batch_size_count", model="double") == 3
    assert metric_value(after, "sh_model_load_seconds", model="double") > 0
    assert metric_value(after, "sh_model_ready", model="double") == 1
    assert metric_value(after, "sh_inflight_requests", model="double") == 0
    assert "sh_queue_depth" in after
