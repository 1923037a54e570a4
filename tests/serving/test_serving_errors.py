"""Every failure path of a real server: validation (400), 401, 404, 413, 429, 500, 503, 504, a model that fails to load."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import serving_support as support
from serving_support import infer_json, metric_value

from serving_harness.config import BatchingSettings, LimitsSettings, ServingConfig
from serving_harness.model import ModelConfig
from serving_harness.protocol.codec import HEADER_LENGTH, encode_infer_request

ONE = np.ones((1, 4), dtype=np.float32)


@pytest.fixture(scope="module")
def client(models_dir: Path) -> Iterator[httpx.Client]:
    models = [ModelConfig(n, models_dir / f"{n}.onnx") for n in ("double", "affine", "int64", "lookup")]
    with support.running_server(models) as url, httpx.Client(base_url=url, timeout=10.0) as http:
        yield http


def _input(**overrides: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4], **overrides}]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_input(name="nope"), "unknown input 'nope'"),
        (_input(datatype="FP64"), "datatype 'FP64'"),
        (_input(shape=[4]), "shape [4]"),
        (_input(shape=[1, 5], data=[1, 2, 3, 4, 5]), "shape [1, 5]"),
        (_input(shape=[2, 4]), "has 4 elements"),
        (_input(shape=[1, -4]), "shape [1, -4]"),
        (_input(data=["a", "b", "c", "d"]), "not FP32"),
        (_input(data=[[1, 2], [3]]), "not a regular array"),
        (_input(data=None), "neither 'data'"),
        (_input(parameters=[1]), "'parameters'"),
        ({"inputs": []}, "non-empty list"),
        ({"inputs": [_input()["inputs"][0]] * 2}, "given twice"),
        ({**_input(), "outputs": [{"name": "nope"}]}, "unknown output 'nope'"),
        ({**_input(), "id": 12}, "'id'"),
        ([1, 2], "JSON object"),
    ],
)
def test_invalid_json_requests_are_400_with_an_oip_error(client: httpx.Client, body: Any, message: str) -> None:
    response = client.post("/v2/models/double/infer", json=body)

    assert response.status_code == 400
    assert message in response.json()["error"]


def test_malformed_json_is_400(client: httpx.Client) -> None:
    response = client.post("/v2/models/double/infer", content=b"{not json")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]


def test_int64_out_of_range_and_float_data_are_400(client: httpx.Client) -> None:
    base = {"name": "ids", "datatype": "INT64", "shape": [1, 3]}
    floats = client.post("/v2/models/int64/infer", json={"inputs": [{**base, "data": [1.5, 2, 3]}]})
    huge = client.post("/v2/models/int64/infer", content=b'{"inputs":[{"name":"ids","datatype":"INT64",'
                       b'"shape":[1,3],"data":[1,2,18446744073709551615]}]}')  # fmt: skip
    assert floats.status_code == 400
    assert huge.status_code == 400


@pytest.mark.parametrize(
    ("cut", "header", "message"),
    [
        (4, None, "runs past the end"),  # the tensor is 4 bytes short
        (0, "100000", "does not fit"),
        (0, "abc", "must be an integer"),
    ],
)
def test_invalid_binary_requests_are_400(client: httpx.Client, cut: int, header: str | None, message: str) -> None:
    content, headers = encode_infer_request({"x": ONE}, binary_data=True)
    if header is not None:
        headers[HEADER_LENGTH] = header

    response = client.post("/v2/models/double/infer", content=content[: len(content) - cut], headers=headers)

    assert response.status_code == 400
    assert message in response.json()["error"]


def test_extra_binary_bytes_are_400(client: httpx.Client) -> None:
    content, headers = encode_infer_request({"x": ONE}, binary_data=True)
    response = client.post("/v2/models/double/infer", content=content + b"\0\0\0\0", headers=headers)
    assert response.status_code == 400
    assert "follow the last binary input" in response.json()["error"]


def test_binary_size_that_disagrees_with_the_shape_is_400(client: httpx.Client) -> None:
    header = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"parameters":{"binary_data_size":12}}]}'
    headers = {HEADER_LENGTH: str(len(header))}

    response = client.post("/v2/models/double/infer", content=header + bytes(12), headers=headers)

    assert response.status_code == 400
    assert "12 bytes of binary data; FP32[1, 4] needs 16" in response.json()["error"]


def test_unknown_model_is_404(client: httpx.Client) -> None:
    assert client.post("/v2/models/nope/infer", json=infer_json(ONE)).status_code == 404
    assert client.get("/v2/models/nope").json()["error"].startswith("unknown model 'nope'")


def test_runtime_failure_is_500_with_an_oip_error(client: httpx.Client) -> None:
    body = {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [2], "data": [1, 99]}]}

    response = client.post("/v2/models/lookup/infer", json=body)

    assert response.status_code == 500
    assert "the model failed" in response.json()["error"]
    ok = {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [2], "data": [1, 9]}]}
    assert client.post("/v2/models/lookup/infer", json=ok).json()["outputs"][0]["data"] == [2, 3, 18, 19]


# ------------------------------------------------------------------------------------------- limits


@pytest.fixture(scope="module")
def slow_url(models_dir: Path) -> Iterator[str]:
    """A lone request waits 1 s for its batch, longer than the 0.3 s timeout; one queued request at most."""
    settings = ServingConfig(
        batching=BatchingSettings(max_batch_size=8, max_queue_delay_us=1_000_000),
        limits=LimitsSettings(max_queue_size=1, request_timeout_s=0.3, max_body_bytes=1024, retry_after_s=2),
    )
    with support.running_server([ModelConfig("double", models_dir / "double.onnx")], settings) as url:
        yield url


def test_body_over_the_limit_is_413(slow_url: str) -> None:
    big = np.ones((100, 4), dtype=np.float32)
    response = httpx.post(f"{slow_url}/v2/models/double/infer", json=infer_json(big))
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_timeout_is_504_and_full_queue_is_503_with_retry_after(slow_url: str) -> None:
    async def two_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=slow_url, timeout=10.0) as http:
            first = asyncio.create_task(http.post("/v2/models/double/infer", json=infer_json(ONE)))
            await asyncio.sleep(0.1)  # the first one is queued now
            second = await http.post("/v2/models/double/infer", json=infer_json(ONE))
            return [await first, second]

    first, second = asyncio.run(two_at_once())

    assert first.status_code == 504
    assert "no result within 0.3 s" in first.json()["error"]
    assert second.status_code == 503
    assert second.headers["retry-after"] == "2"
    metrics = httpx.get(f"{slow_url}/metrics").text
    assert metric_value(metrics, "sh_requests_total", model="double", status="504") >= 1
    assert metric_value(metrics, "sh_requests_total", model="double", status="503") >= 1


def test_model_that_fails_to_load_leaves_the_server_live_not_ready(models_dir: Path) -> None:
    models = [ModelConfig("double", models_dir / "double.onnx"), ModelConfig("broken", models_dir / "broken.onnx")]
    with support.running_server(models, wait_ready=False) as url, httpx.Client(base_url=url) as http:
        support.wait_for(url + "/v2/models/double/ready")

        assert http.get("/v2/health/live").status_code == 200
        assert http.get("/v2/health/ready").status_code == 503
        assert http.get("/v2/models/broken/ready").status_code == 503
        metadata = http.get("/v2/models/broken").json()
        assert metadata["state"] == "UNAVAILABLE"
        assert "INVALID_PROTOBUF" in metadata["reason"] or "Load model" in metadata["reason"]
        refused = http.post("/v2/models/broken/infer", json=infer_json(ONE))
        assert refused.status_code == 503
        assert "not ready" in refused.json()["error"]
        assert http.post("/v2/models/double/infer", json=infer_json(ONE)).status_code == 200


# --------------------------------------------------------------------------------- auth, rate, cache


@pytest.fixture(scope="module")
def guarded_url(models_dir: Path) -> Iterator[str]:
    settings = ServingConfig(auth_token="s3cret", rate_limit_rps=1.0)
    with support.running_server([ModelConfig("double", models_dir / "double.onnx")], settings) as url:
        yield url


def test_auth_guards_inference_and_metadata_not_health(guarded_url: str) -> None:
    good = {"Authorization": "Bearer s3cret"}
    bad = {"Authorization": "Bearer wrong"}
    with httpx.Client(base_url=guarded_url) as http:
        for path in ("/v2/health/live", "/v2/health/ready"):
            assert http.get(path).status_code == 200, path
        for path in ("/v2", "/v2/models/double", "/v2/models/double/ready", "/metrics"):
            assert http.get(path).status_code == 401
            assert http.get(path, headers=bad).status_code == 401
            assert http.get(path, headers=good).status_code == 200
        refused = http.post("/v2/models/double/infer", json=infer_json(ONE))
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in refused.json()["error"]


def test_rate_limit_per_token_is_429_with_retry_after(guarded_url: str) -> None:
    good = {"Authorization": "Bearer s3cret"}
    with httpx.Client(base_url=guarded_url, headers=good) as http:
        statuses = [http.post("/v2/models/double/infer", json=infer_json(ONE)) for _ in range(3)]

    assert statuses[0].status_code == 200
    limited = statuses[-1]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1


def test_prediction_cache_hits_and_misses(models_dir: Path) -> None:
    settings = ServingConfig(cache_size=4)
    with support.running_server([ModelConfig("affine", models_dir / "affine.onnx")], settings) as url:
        x = np.arange(4, dtype=np.float32).reshape(1, 4)
        first = httpx.post(f"{url}/v2/models/affine/infer", json=infer_json(x))
        again = httpx.post(f"{url}/v2/models/affine/infer", json=infer_json(x, outputs=[{"name": "times"}]))
        metrics = httpx.get(f"{url}/metrics").text

    assert again.json()["outputs"] == [first.json()["outputs"][1]]
    assert again.headers["server-timing"] == "queue;dur=0.000, compute;dur=0.000"
    assert metric_value(metrics, "sh_cache_hits_total", model="affine") == 1
    assert metric_value(metrics, "sh_cache_misses_total", model="affine") == 1
