"""The load engine over gRPC (``load.protocol: grpc``): real harness, real Locust subprocesses, on loopback."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from load_support import FAST, MODEL, SERVICE_MS

from serving_harness.config import ServingConfig
from serving_harness.protocol.codec import encode_infer_request
from serving_harness.protocol.grpc_gen import grpc_predict_v2_pb2 as pb
from workbench.data.base import Dataset
from workbench.measure.load.engine import measure_served
from workbench.measure.load.wire import Kind
from workbench.measure.load.wire_grpc import grpc_request, kind_of_code
from workbench.recipe.spec import LoadSpec


@pytest.mark.slow  # a real run or served load step: `make test` runs it, `make test-fast` skips it
def test_a_load_step_over_grpc_is_measured_in_windows(
    sleepy_artifact: Path, sleepy_settings: ServingConfig, sleepy_dataset: Dataset, tmp_path: Path
) -> None:
    profile = {**FAST, "kind": "concurrency", "users": [2], "binary": True}
    result = measure_served(
        sleepy_artifact, sleepy_settings, sleepy_dataset, profile, model_name=MODEL, workdir=tmp_path, protocol="grpc"
    )
    (step,) = result.steps
    m = step.measurement
    assert m.case == "c2" and m.iterations >= FAST["min_requests"] and m.throughput_rps > 0
    assert step.extra["errors"] == {} and "errors" not in m.flags
    assert m.latency_ms["p50"] is not None and m.latency_ms["p50"] >= SERVICE_MS * 0.9  # the model sleeps
    assert step.extra["windows"] and m.trials == len(step.extra["windows"])
    assert "generator_cpu_percent_mean" in step.extra  # the saturation check ran on the gRPC user too
    assert m.server["server_latency_ms_mean"] > 0  # the server's own breakdown, scraped over HTTP
    assert (tmp_path / "server.log").read_text().count('"grpc_port"') == 1


def test_the_recipe_names_the_protocol() -> None:
    assert LoadSpec().protocol == "http"
    assert LoadSpec(protocol="grpc").protocol == "grpc"
    with pytest.raises(ValueError, match="protocol"):
        LoadSpec(protocol="websocket")  # type: ignore[arg-type]


@pytest.mark.parametrize("binary", [False, True])
def test_rest_payloads_become_the_same_raw_grpc_tensors(binary: bool) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    body, headers = encode_infer_request({"x": x}, binary_data=binary, request_id="r1")
    request = pb.ModelInferRequest.FromString(grpc_request("sleepy", body, headers))
    assert (request.model_name, request.id) == ("sleepy", "r1")
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [("x", "FP32", [3, 4])]
    np.testing.assert_array_equal(np.frombuffer(request.raw_input_contents[0], np.float32).reshape(3, 4), x)


def test_grpc_codes_are_read_as_the_http_kinds() -> None:
    assert kind_of_code(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit") is Kind.HTTP_429
    assert kind_of_code(grpc.StatusCode.UNAVAILABLE, "the queue is full") is Kind.HTTP_503
    assert kind_of_code(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses") is Kind.CONNECTION
    assert kind_of_code(grpc.StatusCode.DEADLINE_EXCEEDED, "") is Kind.TIMEOUT
    assert kind_of_code(grpc.StatusCode.INVALID_ARGUMENT, "shape") is Kind.HTTP_4XX
    assert kind_of_code(grpc.StatusCode.INTERNAL, "boom") is Kind.HTTP_5XX
