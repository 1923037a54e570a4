"""Client batches on a real server: a request's rows run as one call on the batch axis, whatever
``max_batch_size`` says; ``limits.max_request_rows`` caps one request with a 413 that names the limit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import serving_support as support
from serving_support import infer_json, metric_value

from serving_harness.config import LimitsSettings, ServingConfig
from serving_harness.model import ModelConfig


@pytest.fixture(scope="module")
def url(models_dir: Path) -> Iterator[str]:
    """Default settings: max_batch_size 1, what exported bundles ship."""
    with support.running_server([ModelConfig("double", models_dir / "double.onnx")], ServingConfig()) as base:
        yield base


@pytest.fixture(scope="module")
def small_url(models_dir: Path) -> Iterator[str]:
    settings = ServingConfig(limits=LimitsSettings(max_request_rows=8))
    with support.running_server([ModelConfig("double", models_dir / "double.onnx")], settings) as base:
        yield base


def client_rows(count: int) -> np.ndarray:
    return np.arange(count * 4, dtype=np.float32).reshape(count, 4)


def batches(url: str) -> tuple[float, float]:
    """sh_batch_size's count (model calls) and sum (rows run) for the double model."""
    text = httpx.get(url + "/metrics").text
    return (
        metric_value(text, "sh_batch_size_count", model="double"),
        metric_value(text, "sh_batch_size_sum", model="double"),
    )


def test_a_16_row_request_is_one_model_call_at_max_batch_one(url: str) -> None:
    x = client_rows(16)
    calls_before, rows_before = batches(url)

    response = httpx.post(url + "/v2/models/double/infer", json=infer_json(x))

    assert response.status_code == 200
    output = response.json()["outputs"][0]
    np.testing.assert_array_equal(np.array(output["data"], dtype=np.float32).reshape(output["shape"]), 2 * x + 1)
    calls_after, rows_after = batches(url)
    assert calls_after - calls_before == 1
    assert rows_after - rows_before == 16


def test_1026_rows_to_an_idle_server_with_default_settings_answer_200(url: str) -> None:
    x = client_rows(1026)
    calls_before, _ = batches(url)

    response = httpx.post(url + "/v2/models/double/infer", json=infer_json(x), timeout=30)

    assert response.status_code == 200, response.text
    assert "retry-after" not in response.headers
    output = response.json()["outputs"][0]
    assert output["shape"] == [1026, 4]
    np.testing.assert_array_equal(np.array(output["data"], dtype=np.float32).reshape(1026, 4), 2 * x + 1)
    assert batches(url)[0] - calls_before == 1


def test_a_request_over_max_request_rows_gets_413_at_once_naming_the_limit(small_url: str) -> None:
    calls_before, _ = batches(small_url)

    response = httpx.post(small_url + "/v2/models/double/infer", json=infer_json(client_rows(9)))

    assert response.status_code == 413
    assert "retry-after" not in response.headers  # it never fits: retrying cannot help
    error = response.json()["error"]
    assert "9 rows" in error and "at most 8 rows per request" in error and "max_request_rows" in error
    assert batches(small_url)[0] == calls_before  # nothing ran
    at_limit = httpx.post(small_url + "/v2/models/double/infer", json=infer_json(client_rows(8)))
    assert at_limit.status_code == 200


def test_model_metadata_tells_the_client_the_row_limit(small_url: str, url: str) -> None:
    assert httpx.get(small_url + "/v2/models/double").json()["max_request_rows"] == 8
    assert httpx.get(url + "/v2/models/double").json()["max_request_rows"] == LimitsSettings().max_request_rows


def test_the_max_request_rows_flag_sets_the_limit(models_dir: Path) -> None:
    args = ("--model", str(models_dir / "double.onnx"), "--name", "double", "--max-request-rows", "4")
    with support.harness_process(*args) as (_, base):
        refused = httpx.post(base + "/v2/models/double/infer", json=infer_json(client_rows(5)))
        served = httpx.post(base + "/v2/models/double/infer", json=infer_json(client_rows(4)))

    assert refused.status_code == 413
    assert "at most 4 rows" in refused.json()["error"]
    assert served.status_code == 200
