"""The OIP extensions Triton's clients read (model config, statistics, repository index) and HTTP compression,
on the real harness on 127.0.0.1, read back through ``tritonclient`` where it is installed."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import serving_support as support

from serving_harness.config import BatchingSettings, LimitsSettings, ServingConfig
from serving_harness.model import ModelConfig

X = np.arange(8, dtype=np.float32).reshape(2, 4)
BATCHING = ServingConfig(
    instances=2, batching=BatchingSettings(max_batch_size=8, max_queue_delay_us=300, preferred_batch_sizes=(4,))
)


@pytest.fixture(scope="module")
def url(models_dir: Path) -> Iterator[str]:
    models = [ModelConfig(name="double", path=models_dir / "double.onnx", version="3")]
    models.append(ModelConfig(name="fixed", path=models_dir / "fixed.onnx"))
    with support.running_server(models, BATCHING) as base:
        yield base


def _triton(url: str) -> Any:
    http = pytest.importorskip("tritonclient.http")
    return http, http.InferenceServerClient(url=url.removeprefix("http://"))


def test_model_config_reads_back_through_tritonclient(url: str) -> None:
    _, client = _triton(url)
    config = client.get_model_config("double")
    client.close()
    assert config["name"] == "double" and config["backend"] == "onnxruntime"
    assert config["max_batch_size"] == LimitsSettings().max_request_rows  # per request, not the batcher's 8
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}]  # no batch axis in dims
    assert config["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}]
    assert config["dynamic_batching"] == {"preferred_batch_size": [4], "max_queue_delay_microseconds": 300}
    assert config["instance_group"] == [{"name": "double", "kind": "KIND_CPU", "count": 2}]


def test_a_model_without_a_batch_axis_has_max_batch_size_0(url: str) -> None:
    config = httpx.get(f"{url}/v2/models/fixed/config").json()
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert config["input"][0]["dims"] == [1, 4]


def test_statistics_count_what_was_served(url: str) -> None:
    http, client = _triton(url)
    before = client.get_inference_statistics("double")["model_stats"][0]
    for _ in range(3):
        tensor = http.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        client.infer("double", [tensor])
    httpx.post(f"{url}/v2/models/double/infer", json=support.infer_json(np.zeros((1, 3), np.float32)))  # a 400
    after = client.get_inference_statistics("double", "3")["model_stats"][0]
    everything = client.get_inference_statistics()["model_stats"]
    client.close()
    assert (after["name"], after["version"]) == ("double", "3")
    assert after["inference_count"] - before["inference_count"] == 6  # rows
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 3
    assert after["inference_stats"]["fail"]["count"] - before["inference_stats"]["fail"]["count"] == 1
    assert after["inference_stats"]["compute_infer"]["ns"] > before["inference_stats"]["compute_infer"]["ns"]
    assert after["execution_count"] >= 1 and after["last_inference"] > 0
    assert {(s["name"], s["version"]) for s in everything} == {("double", "3"), ("fixed", "1")}


def test_repository_index_lists_the_served_versions(url: str) -> None:
    _, client = _triton(url)
    index = client.get_model_repository_index()
    client.close()
    assert sorted((m["name"], m["version"], m["state"]) for m in index) == [
        ("double", "3", "READY"),
        ("fixed", "1", "READY"),
    ]
    assert httpx.post(f"{url}/v2/repository/index", json={"ready": True}).status_code == 200
    assert httpx.post(f"{url}/v2/repository/index", content=b"[1").status_code == 400


def test_every_advertised_extension_is_served(url: str) -> None:
    extensions = httpx.get(f"{url}/v2").json()["extensions"]
    assert "model_repository_versions" not in extensions and "model_repository" not in extensions
    assert {"model_configuration", "statistics"} <= set(extensions)
    assert httpx.get(f"{url}/v2/models/double/config").status_code == 200
    assert httpx.get(f"{url}/v2/models/double/versions/3/stats").status_code == 200
    assert httpx.get(f"{url}/v2/models/double/versions/9/stats").status_code == 404


def test_extensions_need_the_token_when_auth_is_on(models_dir: Path) -> None:
    settings = ServingConfig(auth_token="t0k")
    with support.running_server([ModelConfig(name="double", path=models_dir / "double.onnx")], settings) as base:
        refused = [
            httpx.get(f"{base}/v2/models/double/config"),
            httpx.get(f"{base}/v2/models/nope/stats"),  # 401, not 404: no model names for strangers
            httpx.get(f"{base}/v2/models/stats"),
            httpx.post(f"{base}/v2/repository/index"),
        ]
        allowed = httpx.get(f"{base}/v2/models/stats", headers={"Authorization": "Bearer t0k"})
    assert [r.status_code for r in refused] == [401, 401, 401, 401]
    assert allowed.status_code == 200


# -------------------------------------------------------------------------------------------------- compression


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_compressed_requests_and_responses_round_trip(url: str, algorithm: str) -> None:
    http, client = _triton(url)
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)  # an answer worth compressing
    got = {}
    for binary in (False, True):
        tensor = http.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = [http.InferRequestedOutput("y", binary_data=binary)]
        result = client.infer(
            "double", [tensor], outputs=outputs,
            request_compression_algorithm=algorithm, response_compression_algorithm=algorithm,
        )  # fmt: skip
        got[binary] = result.as_numpy("y")
    client.close()
    for array in got.values():
        np.testing.assert_allclose(array, 2 * x + 1, rtol=1e-6)


@pytest.mark.parametrize(("encoding", "pack"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_a_compressed_body_is_read_and_the_answer_compressed(url: str, encoding: str, pack: Any) -> None:
    x = np.ones((64, 4), dtype=np.float32)
    body = pack(orjson.dumps(support.infer_json(x)))
    headers = {"Content-Encoding": encoding, "Content-Type": "application/json", "Accept-Encoding": encoding}
    response = httpx.post(f"{url}/v2/models/double/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text  # was 400 "not valid JSON ... surrogates not allowed"
    assert response.headers["content-encoding"] == encoding  # httpx decoded it for us
    assert response.json()["outputs"][0]["data"] == [3.0] * 256


def test_small_answers_and_refused_encodings_go_uncompressed(url: str) -> None:
    body = orjson.dumps(support.infer_json(X))
    small = httpx.post(f"{url}/v2/models/double/infer", content=body, headers={"Accept-Encoding": "gzip"})
    refused = httpx.post(
        f"{url}/v2/models/double/infer",
        content=orjson.dumps(support.infer_json(np.ones((64, 4), np.float32))),
        headers={"Accept-Encoding": "gzip;q=0, deflate;q=0"},
    )
    assert small.status_code == 200 and "content-encoding" not in small.headers
    assert refused.status_code == 200 and "content-encoding" not in refused.headers


def test_bad_compressed_bodies_are_refused(models_dir: Path) -> None:
    limits = LimitsSettings(max_body_bytes=64 * 1024)
    settings = ServingConfig(limits=limits)
    bomb = gzip.compress(b" " * (1024 * 1024))  # 1 MiB of spaces in ~1 KiB
    with support.running_server([ModelConfig(name="double", path=models_dir / "double.onnx")], settings) as base:
        infer = f"{base}/v2/models/double/infer"
        too_big = httpx.post(infer, content=bomb, headers={"Content-Encoding": "gzip"})
        broken = httpx.post(infer, content=b"not gzip at all", headers={"Content-Encoding": "gzip"})
        unknown = httpx.post(infer, content=b"{}", headers={"Content-Encoding": "br"})
    assert len(bomb) < limits.max_body_bytes
    assert too_big.status_code == 413
    assert broken.status_code == 400 and "decompressed" in broken.json()["error"]
    assert unknown.status_code == 400 and "br" in unknown.json()["error"]
