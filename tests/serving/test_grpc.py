"""gRPC (OIP v2 ``inference.GRPCInferenceService``) served beside REST by the real harness on 127.0.0.1.

Triton's own clients (``tritonclient``) check that the two protocols answer alike; the generated stubs
check what tritonclient never sends (typed ``contents``) and the status codes.
"""

from __future__ import annotations

import ast
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import serving_support as support

from serving_harness.config import ServingConfig
from serving_harness.model import ModelConfig
from serving_harness.protocol import grpc_service
from serving_harness.protocol.grpc_gen import grpc_predict_v2_pb2 as pb
from serving_harness.protocol.grpc_gen import grpc_predict_v2_pb2_grpc as pb_grpc
from serving_harness.protocol.grpc_gen import health_pb2, health_pb2_grpc

TOKEN = "s3cret"
X = np.array([[0.5, -1.0, 2.0, 3.25], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
Tensor = pb.ModelInferRequest.InferInputTensor


@contextlib.contextmanager
def _serving(models_dir: Path, settings: ServingConfig | None = None) -> Iterator[tuple[str, str]]:
    """The affine, int64 and text models over REST and gRPC; yields (REST URL, gRPC target)."""
    models = [ModelConfig(name=n, path=models_dir / f"{n}.onnx") for n in ("affine", "int64", "text")]
    port = support.free_port()
    with support.running_server(models, settings, grpc_port=port) as url:
        yield url, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def served(models_dir: Path) -> Iterator[tuple[str, str]]:
    with _serving(models_dir) as both:
        yield both


@contextlib.contextmanager
def _stub(target: str) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]


def _raw_request(model: str = "affine", x: np.ndarray = X) -> pb.ModelInferRequest:
    tensor = Tensor(name="x", datatype="FP32", shape=list(x.shape))
    return pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[x.tobytes()])


def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    code: grpc.StatusCode = caught.value.code()
    return code


# ------------------------------------------------------------------------------------------ Triton's clients


def _triton_outputs(url: str, target: str, compression: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The affine model's outputs through tritonclient: HTTP JSON, HTTP binary, gRPC raw."""
    http = pytest.importorskip("tritonclient.http")
    grpcclient = pytest.importorskip("tritonclient.grpc")
    got: dict[str, dict[str, np.ndarray]] = {}
    client = http.InferenceServerClient(url=url.removeprefix("http://"))
    for binary in (False, True):
        tensor = http.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X, binary_data=binary)
        outputs = [http.InferRequestedOutput(n, binary_data=binary) for n in ("plus", "times")]
        result = client.infer("affine", [tensor], outputs=outputs)
        got["json" if not binary else "binary"] = {n: result.as_numpy(n) for n in ("plus", "times")}
    client.close()
    with grpcclient.InferenceServerClient(url=target) as client:
        tensor = grpcclient.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        result = client.infer("affine", [tensor], compression_algorithm=compression)
        got["grpc"] = {n: result.as_numpy(n) for n in ("plus", "times")}
    return got


def test_tritonclient_http_and_grpc_get_identical_outputs(served: tuple[str, str]) -> None:
    got = _triton_outputs(*served)
    expected = {"plus": X + support.BIAS, "times": X * 3}
    for kind, outputs in got.items():
        for name, array in outputs.items():
            assert array.dtype == np.float32 and array.shape == X.shape, kind
            np.testing.assert_array_equal(array, expected[name], err_msg=f"{kind} {name}")


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_grpc_requests_are_answered(served: tuple[str, str], algorithm: str) -> None:
    got = _triton_outputs(*served, compression=algorithm)
    np.testing.assert_array_equal(got["grpc"]["plus"], X + support.BIAS)


def test_tritonclient_reads_server_and_model_metadata(served: tuple[str, str]) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    with grpcclient.InferenceServerClient(url=served[1]) as client:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("affine")
        server = client.get_server_metadata(as_json=True)
        model = client.get_model_metadata("affine", as_json=True)
    assert server["name"] == "serving_harness" and "statistics" in server["extensions"]
    rest = httpx.get(f"{served[0]}/v2").json()
    assert server["extensions"] == rest["extensions"]  # one server, one list
    assert model["platform"] == "onnxruntime_onnx" and model["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in model["inputs"]] == [("x", "FP32", ["-1", "4"])]


# --------------------------------------------------------------------------------------- the stubs themselves


def test_typed_contents_come_back_typed_and_raw_comes_back_raw(served: tuple[str, str]) -> None:
    ids = np.array([[1, 2, 3]], dtype=np.int64)
    typed = pb.ModelInferRequest(
        model_name="int64",
        id="req-7",
        inputs=[
            Tensor(
                name="ids", datatype="INT64", shape=[1, 3], contents=pb.InferTensorContents(int64_contents=[1, 2, 3])
            )
        ],
    )
    raw = pb.ModelInferRequest(
        model_name="int64",
        inputs=[Tensor(name="ids", datatype="INT64", shape=[1, 3])],
        raw_input_contents=[ids.tobytes()],
    )
    with _stub(served[1]) as stub:
        typed_answer = stub.ModelInfer(typed)
        raw_answer = stub.ModelInfer(raw)
    assert typed_answer.id == "req-7" and not typed_answer.raw_output_contents
    assert list(typed_answer.outputs[0].contents.int64_contents) == [2, 3, 4]
    assert list(typed_answer.outputs[0].shape) == [1, 3]
    np.testing.assert_array_equal(np.frombuffer(raw_answer.raw_output_contents[0], dtype=np.int64), [2, 3, 4])


def test_typed_float_contents_carry_nan_and_infinities(served: tuple[str, str]) -> None:
    """FP32 contents are float32 already: NaN and infinities are values, not an overflow to refuse."""
    x = np.array([[1.0, np.nan, np.inf, -np.inf]], dtype=np.float32)
    contents = pb.InferTensorContents(fp32_contents=x.ravel().tolist())
    typed = pb.ModelInferRequest(
        model_name="affine", inputs=[Tensor(name="x", datatype="FP32", shape=[1, 4], contents=contents)]
    )
    counted = _nonfinite_counts(served[0])
    with _stub(served[1]) as stub:
        answer = stub.ModelInfer(typed)
    outputs = {o.name: np.array(o.contents.fp32_contents, dtype=np.float32).reshape(1, 4) for o in answer.outputs}
    np.testing.assert_array_equal(outputs["plus"], x + support.BIAS)
    np.testing.assert_array_equal(outputs["times"], x * 3)
    now = _nonfinite_counts(served[0])
    assert (now[0] - counted[0], now[1] - counted[1]) == (3, 6)  # in: 3; out: 3 in each of the two outputs


def _nonfinite_counts(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics").text
    found = [
        support.metric_value(text, "sh_nonfinite_values_total", model="affine", direction=d)
        for d in ("input", "output")
    ]
    return found[0], found[1]


def test_the_grpc_service_asks_the_harness_through_its_public_methods() -> None:
    """One harness, two protocols: gRPC calls what REST offers it, never a private helper of the REST module."""
    source = Path(grpc_service.__file__).read_text()
    tree = ast.parse(source)
    private_calls = [
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "harness"
    ]
    private_imports = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("serving_harness")
        for alias in node.names
        if alias.name.startswith("_") and alias.name != "__version__"
    ]
    assert private_calls == [] and private_imports == []


def test_bytes_tensors_travel_typed_and_raw(served: tuple[str, str]) -> None:
    words = [b"hello", "h\u00e9llo w\u00f6rld".encode(), b""]
    raw_words = b"".join(len(w).to_bytes(4, "little") + w for w in words)
    typed = pb.ModelInferRequest(
        model_name="text",
        inputs=[
            Tensor(name="text", datatype="BYTES", shape=[3], contents=pb.InferTensorContents(bytes_contents=words))
        ],
    )
    raw = pb.ModelInferRequest(
        model_name="text", inputs=[Tensor(name="text", datatype="BYTES", shape=[3])], raw_input_contents=[raw_words]
    )
    with _stub(served[1]) as stub:
        assert list(stub.ModelInfer(typed).outputs[0].contents.bytes_contents) == words
        assert stub.ModelInfer(raw).raw_output_contents[0] == raw_words


def test_requested_outputs_only(served: tuple[str, str]) -> None:
    request = _raw_request()
    request.outputs.add(name="times")
    with _stub(served[1]) as stub:
        answer = stub.ModelInfer(request)
    assert [o.name for o in answer.outputs] == ["times"] and len(answer.raw_output_contents) == 1


def test_errors_keep_their_meaning_as_grpc_codes(served: tuple[str, str]) -> None:
    wrong_shape = _raw_request(x=np.zeros((2, 3), dtype=np.float32))
    short = _raw_request()
    short.raw_input_contents[0] = b"\x00" * 8
    with _stub(served[1]) as stub:
        assert _code(lambda: stub.ModelInfer(_raw_request("nope"))) == grpc.StatusCode.NOT_FOUND
        assert _code(lambda: stub.ModelInfer(wrong_shape)) == grpc.StatusCode.INVALID_ARGUMENT
        assert _code(lambda: stub.ModelInfer(short)) == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            _code(lambda: stub.ModelInfer(pb.ModelInferRequest(model_name="affine")))
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        assert (
            _code(lambda: stub.ModelReady(pb.ModelReadyRequest(name="affine", version="9")))
            == grpc.StatusCode.NOT_FOUND
        )
        assert _code(lambda: stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="affine"))) == (
            grpc.StatusCode.UNIMPLEMENTED
        )


def test_grpc_requests_are_counted_with_their_protocol(served: tuple[str, str]) -> None:
    url, target = served
    before = httpx.get(f"{url}/metrics").text
    with _stub(target) as stub:
        for _ in range(3):
            stub.ModelInfer(_raw_request())
        _code(lambda: stub.ModelInfer(_raw_request(x=np.zeros((1, 2), dtype=np.float32))))
    httpx.post(f"{url}/v2/models/affine/infer", json=support.infer_json(X))
    after = httpx.get(f"{url}/metrics").text

    def moved(name: str, **labels: str) -> float:
        return support.metric_value(after, name, **labels) - support.metric_value(before, name, **labels)

    assert moved("sh_requests_total", model="affine", protocol="grpc", status="200") == 3
    assert moved("sh_requests_total", model="affine", protocol="grpc", status="400") == 1
    assert moved("sh_requests_total", model="affine", protocol="http", status="200") == 1
    assert moved("sh_request_duration_seconds_count", model="affine", protocol="grpc") == 4
    assert moved("sh_request_duration_seconds_count", model="affine", protocol="http") == 1


def test_health_service_says_serving(served: tuple[str, str]) -> None:
    with grpc.insecure_channel(served[1]) as channel:
        health = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
        for service in ("", "inference.GRPCInferenceService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        first = next(iter(health.Watch(health_pb2.HealthCheckRequest(), timeout=5)))
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        assert _code(lambda: health.Check(health_pb2.HealthCheckRequest(service="other"))) == grpc.StatusCode.NOT_FOUND


# ------------------------------------------------------------------------------------------- auth and limits


def test_grpc_needs_the_bearer_token_where_rest_does(models_dir: Path) -> None:
    with _serving(models_dir, ServingConfig(auth_token=TOKEN)) as (url, target), _stub(target) as stub:
        assert stub.ServerLive(pb.ServerLiveRequest()).live  # open, as /v2/health/live
        assert stub.ServerReady(pb.ServerReadyRequest()).ready
        for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
            assert (
                _code(lambda m=metadata: stub.ModelInfer(_raw_request(), metadata=m)) == grpc.StatusCode.UNAUTHENTICATED
            )
            assert _code(lambda m=metadata: stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=m)) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
        # an unknown name is UNAUTHENTICATED too: a stranger learns no model name
        assert (
            _code(lambda: stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"))) == grpc.StatusCode.UNAUTHENTICATED
        )
        good = (("authorization", f"Bearer {TOKEN}"),)
        assert stub.ModelInfer(_raw_request(), metadata=good).raw_output_contents
        assert stub.ModelMetadata(pb.ModelMetadataRequest(name="affine"), metadata=good).name == "affine"
        metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert support.metric_value(metrics, "sh_requests_total", model="affine", protocol="grpc", status="401") == 3


def test_grpc_rate_limit_is_resource_exhausted_with_retry_after(models_dir: Path) -> None:
    with _serving(models_dir, ServingConfig(rate_limit_rps=1.0)) as (_, target), _stub(target) as stub:
        codes, trailers = [], []
        for _ in range(5):
            try:
                stub.ModelInfer(_raw_request())
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
                trailers.append(dict(exc.trailing_metadata() or ()))
    assert codes[0] == grpc.StatusCode.OK
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert all(t.get("retry-after") for t in trailers)


def test_serve_command_serves_grpc_on_its_port(models_dir: Path) -> None:
    model, port = str(models_dir / "affine.onnx"), support.free_port()
    with (
        support.harness_process("--model", model, "--name", "affine", "--grpc-port", str(port)),
        _stub(f"127.0.0.1:{port}") as stub,
    ):
        answer = stub.ModelInfer(_raw_request())
    np.testing.assert_array_equal(
        np.frombuffer(answer.raw_output_contents[0], np.float32).reshape(2, 4), X + support.BIAS
    )
