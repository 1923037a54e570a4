"""Small real models (built with onnx.helper) and a real server on 127.0.0.1 for the serving tests.

The one place the tests start a harness and wait for it: ``running_server`` (the app in a thread)
and ``harness_process`` (``python -m serving_harness serve`` in a subprocess); the bundle tests use
them through ``bundle_support``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import numpy as np
import onnx
import uvicorn
from onnx import TensorProto, helper

from serving_harness.canary import CanarySplit
from serving_harness.config import ServingConfig
from serving_harness.model import ModelConfig
from serving_harness.protocol.grpc_service import GrpcListener
from serving_harness.protocol.rest import create_app
from serving_harness.server import bind_socket, uvicorn_config

OPSET = [helper.make_opsetid("", 17)]
BIAS = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(array, name))


def double_model(path: Path) -> Path:
    """x FP32 [-1, 4] -> y = 2x + 1: each output row depends only on its input row."""
    nodes = [
        _const("two", np.array(2.0, dtype=np.float32)),
        _const("one", np.array(1.0, dtype=np.float32)),
        helper.make_node("Mul", ["x", "two"], ["x2"]),
        helper.make_node("Add", ["x2", "one"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    return _save(helper.make_graph(nodes, "double", [x], [y]), path)


def affine_model(path: Path) -> Path:
    """x FP32 [-1, 4] -> plus = x + [1, 2, 3, 4], times = 3x (two outputs, an "add bias" model)."""
    nodes = [
        _const("bias", BIAS),
        _const("three", np.array(3.0, dtype=np.float32)),
        helper.make_node("Add", ["x", "bias"], ["plus"]),
        helper.make_node("Mul", ["x", "three"], ["times"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in ("plus", "times")]
    return _save(helper.make_graph(nodes, "affine", [x], outs), path)


def int64_model(path: Path) -> Path:
    """ids INT64 [-1, 3] -> next = ids + 1."""
    nodes = [_const("one", np.array(1, dtype=np.int64)), helper.make_node("Add", ["ids", "one"], ["next"])]
    x = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3])
    y = helper.make_tensor_value_info("next", TensorProto.INT64, ["batch", 3])
    return _save(helper.make_graph(nodes, "int64", [x], [y]), path)


def sequence_model(path: Path) -> Path:
    """x FP32 [-1, -1] -> y = 2x: a dynamic non-batch axis (requests batch only with equal lengths)."""
    nodes = [_const("two", np.array(2.0, dtype=np.float32)), helper.make_node("Mul", ["x", "two"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "length"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "length"])
    return _save(helper.make_graph(nodes, "sequence", [x], [y]), path)


def text_model(path: Path) -> Path:
    """text BYTES [-1] -> same BYTES (Identity on strings)."""
    x = helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])
    y = helper.make_tensor_value_info("echo", TensorProto.STRING, ["batch"])
    return _save(helper.make_graph([helper.make_node("Identity", ["text"], ["echo"])], "text", [x], [y]), path)


def identity_model(path: Path) -> Path:
    """x FP32 [-1, 4] -> y = x, bit for bit: what goes in (NaN, infinities) must come back."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    return _save(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y]), path)


def fixed_model(path: Path) -> Path:
    """x FP32 [1, 4] -> y = x + 1 with a fixed first axis: no batch axis, so no batching."""
    nodes = [_const("one", np.array(1.0, dtype=np.float32)), helper.make_node("Add", ["x", "one"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    return _save(helper.make_graph(nodes, "fixed", [x], [y]), path)


def lookup_model(path: Path) -> Path:
    """ids INT64 [-1] -> rows of a 10 x 2 table; an id outside 0..9 makes the runtime fail."""
    table = np.arange(20, dtype=np.float32).reshape(10, 2)
    nodes = [_const("table", table), helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0)]
    x = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"])
    y = helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["batch", 2])
    return _save(helper.make_graph(nodes, "lookup", [x], [y]), path)


def broken_model(path: Path) -> Path:
    path.write_bytes(b"this is not an onnx model")
    return path


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(
    models: Sequence[ModelConfig],
    settings: ServingConfig | None = None,
    *,
    wait_ready: bool = True,
    canary: CanarySplit | None = None,
    version_label: bool = False,
    loop: str = "uvloop",
    grpc_port: int | None = None,
) -> Iterator[str]:
    """The real app under uvicorn (uvloop, httptools) in a thread on a free loopback port; yields its URL.

    ``grpc_port`` (``free_port()``): the app serves gRPC there too, on the same loop."""
    settings = settings or ServingConfig()
    sock = bind_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    grpc = None if grpc_port is None else GrpcListener(host="127.0.0.1", port=grpc_port)
    app = create_app(models, settings, canary=canary, version_label=version_label, grpc=grpc)
    server = uvicorn.Server(uvicorn_config(app, settings, log_level="warning", loop=loop))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(url + ("/v2/health/ready" if wait_ready else "/v2/health/live"))
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@contextlib.contextmanager
def harness_process(
    *args: str,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    cwd: Path | None = None,
    ready_timeout_s: float = 30.0,
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m serving_harness serve ARGS --port 0``; yields the process and its URL once it is ready.

    ``env`` is the child's whole environment (None: this one's). The child is killed on the way out
    unless the test already stopped it.
    """
    command = [python, "-m", "serving_harness", "serve", *args, "--port", "0"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
    )  # fmt: skip
    try:
        listening = json.loads(_first_line(process, ready_timeout_s))
        assert listening["event"] == "listening"
        wait_for(listening["url"] + "/v2/health/ready", ready_timeout_s)
        yield process, listening["url"]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def _first_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    """The child's first stdout line, or AssertionError with its stderr when none comes in time."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline() if process.stdout else ""))
    reader.start()
    reader.join(timeout_s)
    if not lines or not lines[0]:
        process.kill()
        raise AssertionError(f"no listening line; stderr: {process.communicate()[1][-2000:]}")
    return lines[0]


def wait_for(url: str, timeout_s: float = 20.0) -> None:
    """Poll ``url`` until it answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.02)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s} s")


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels`` in Prometheus text (0 when none):
    ``sh_requests_total`` with model and status counts both protocols, add ``protocol`` for one."""
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        metric, _, label_text = sample.partition("{")
        got = set(label_text.rstrip("}").split(",")) if label_text else set()
        if metric == name and wanted <= got:
            total += float(value)
    return total


def infer_json(x: np.ndarray, name: str = "x", datatype: str = "FP32", **extra: object) -> dict[str, object]:
    """An OIP JSON request body with one input."""
    return {
        "inputs": [{"name": name, "datatype": datatype, "shape": list(x.shape), "data": x.ravel().tolist()}],
        **extra,
    }


def wait_for_metric(
    url: str, name: str, value: float, timeout_s: float = 10.0, token: str | None = None, **labels: str
) -> None:
    """Poll ``/metrics`` until the sample ``name{labels}`` reads ``value`` (with the bearer ``token`` when auth is on)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if metric_value(httpx.get(url + "/metrics", headers=headers).text, name, **labels) == value:
            return
        time.sleep(0.01)
    raise TimeoutError(f"{name}{labels} did not reach {value} within {timeout_s} s")
