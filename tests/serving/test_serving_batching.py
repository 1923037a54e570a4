"""Dynamic batching on a real server: many concurrent clients each get their own answer, never another's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import serving_support as support
from serving_support import infer_json, metric_value

from serving_harness.config import BatchingSettings, RuntimeSettings, ServingConfig
from serving_harness.model import ModelConfig
from serving_harness.protocol.codec import HEADER_LENGTH, decode_infer_response, encode_infer_request


@pytest.fixture(scope="module")
def url(models_dir: Path) -> Iterator[str]:
    settings = ServingConfig(
        runtime=RuntimeSettings(intra_op_threads=1),
        instances=2,
        batching=BatchingSettings(max_batch_size=8, max_queue_delay_us=5_000),
    )
    models = [ModelConfig(n, models_dir / f"{n}.onnx") for n in ("double", "sequence")]
    with support.running_server(models, settings) as base:
        yield base


def client_input(i: int, count: int = 1) -> np.ndarray:
    """Rows no other client sends: client i's values are i, i + 0.25, -i, 1000 + i (per row r: + 10000 r)."""
    row = np.array([i, i + 0.25, -i, 1000 + i], dtype=np.float32)
    return np.stack([row + 10_000 * r for r in range(count)])


async def _post_all(url: str, bodies: list[dict[str, object]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=20.0, limits=limits) as http:
        return await asyncio.gather(*(http.post("/v2/models/double/infer", json=b) for b in bodies))


def test_64_concurrent_clients_each_get_their_own_result(url: str) -> None:
    before = httpx.get(f"{url}/metrics").text
    inputs = [client_input(i) for i in range(64)]

    responses = asyncio.run(_post_all(url, [infer_json(x, id=str(i)) for i, x in enumerate(inputs)]))

    for i, (x, response) in enumerate(zip(inputs, responses, strict=True)):
        assert response.status_code == 200
        body = response.json()
        assert body["id"] == str(i)
        np.testing.assert_array_equal(np.array(body["outputs"][0]["data"], dtype=np.float32), (2 * x + 1).ravel())
    after = httpx.get(f"{url}/metrics").text
    batches = metric_value(after, "sh_batch_size_count", model="double") - metric_value(
        before, "sh_batch_size_count", model="double"
    )
    assert 0 < batches < 64  # requests really were batched together


def test_multi_row_and_oversized_requests_among_others(url: str) -> None:
    counts = [3, 1, 20, 2, 1, 8, 5, 1]  # 20 > max_batch_size: split into 8 + 8 + 4
    inputs = [client_input(i, c) for i, c in enumerate(counts)]

    responses = asyncio.run(_post_all(url, [infer_json(x) for x in inputs]))

    for x, response in zip(inputs, responses, strict=True):
        output = response.json()["outputs"][0]
        assert output["shape"] == [len(x), 4]
        np.testing.assert_array_equal(np.array(output["data"], dtype=np.float32), (2 * x + 1).ravel())


def test_binary_and_json_clients_batched_together(url: str) -> None:
    async def mixed() -> list[tuple[np.ndarray, np.ndarray]]:
        async with httpx.AsyncClient(base_url=url, timeout=20.0) as http:

            async def one(i: int) -> tuple[np.ndarray, np.ndarray]:
                x = client_input(i, 2)
                content, headers = encode_infer_request({"x": x}, binary_data=i % 2 == 0, binary_data_output=i % 3 == 0)
                response = await http.post("/v2/models/double/infer", content=content, headers=headers)
                length = response.headers.get(HEADER_LENGTH)
                _, outputs = decode_infer_response(response.content, int(length) if length else None)
                return x, outputs["y"]

            return await asyncio.gather(*(one(i) for i in range(24)))

    before = httpx.get(f"{url}/metrics").text
    for x, y in asyncio.run(mixed()):
        np.testing.assert_array_equal(y, 2 * x + 1)
    after = httpx.get(f"{url}/metrics").text

    def batches_over_two_rows(text: str) -> float:  # every client sends 2 rows: more rows means several clients
        total = metric_value(text, "sh_batch_size_count", model="double")
        return total - metric_value(text, "sh_batch_size_bucket", model="double", le="2.0")

    assert batches_over_two_rows(after) - batches_over_two_rows(before) >= 1  # some batch held several requests


def test_different_lengths_are_batched_apart_and_answered_right(url: str) -> None:
    async def lengths() -> list[tuple[np.ndarray, httpx.Response]]:
        async with httpx.AsyncClient(base_url=url, timeout=20.0) as http:

            async def one(i: int) -> tuple[np.ndarray, httpx.Response]:
                x = np.full((1, 2 + i % 3), i, dtype=np.float32)
                return x, await http.post("/v2/models/sequence/infer", json=infer_json(x))

            return await asyncio.gather(*(one(i) for i in range(18)))

    for x, response in asyncio.run(lengths()):
        output = response.json()["outputs"][0]
        assert output["shape"] == list(x.shape)
        assert output["data"] == (2 * x).ravel().tolist()
