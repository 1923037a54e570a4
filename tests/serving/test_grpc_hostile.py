"""Idle sockets on the gRPC port must not take REST down with them (found by attacking --grpc-port).

Before: ~1,000 TCP connections to the gRPC port that never sent the HTTP/2 preface held their file descriptors
for good (no gRPC connection cap, grpc's 120 s handshake timeout); under a 1,024 open-file limit, as in many
containers, REST could no longer accept a connection, gRPC answered nothing, and the server ignored SIGTERM.
Now both protocols share the process's connection budget under the file limit, and a connection that has not
finished its HTTP/2 handshake within ``limits.header_timeout_s`` is closed, as REST closes a silent one.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import serving_support as support

from serving_harness.protocol.grpc_gen import grpc_predict_v2_pb2 as pb
from serving_harness.protocol.grpc_gen import grpc_predict_v2_pb2_grpc as pb_grpc

FILE_LIMIT = 256
IDLE_SOCKETS = 300  # more than the whole process may hold


def _infer(grpc_port: int) -> bool:
    request = pb.ModelInferRequest(model_name="affine")
    x = np.ones((1, 4), dtype=np.float32)
    request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.tobytes())
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            return bool(pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=5).outputs)
    except grpc.RpcError:
        return False


def test_idle_grpc_sockets_leave_rest_serving_and_are_closed_after_the_header_timeout(models_dir: Path) -> None:
    port, grpc_port = support.free_port(), support.free_port()
    serve = [sys.executable, "-m", "serving_harness", "serve", "--model", str(models_dir / "affine.onnx"),
             "--name", "affine", "--port", str(port), "--grpc-port", str(grpc_port), "--header-timeout-s", "1",
             "--log-level", "warning"]  # fmt: skip
    command = ["bash", "-c", f'ulimit -n {FILE_LIMIT} && exec "$@"', "serve", *serve]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    idle: list[socket.socket] = []
    try:
        support.wait_for(f"http://127.0.0.1:{port}/v2/health/ready")
        for _ in range(IDLE_SOCKETS):
            idle.append(socket.create_connection(("127.0.0.1", grpc_port), timeout=5))

        assert httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=10).status_code == 200
        deadline = time.monotonic() + 20  # the silent sockets are closed after the 1 s header timeout
        while not _infer(grpc_port) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _infer(grpc_port)
        assert process.poll() is None
    finally:
        for sock in idle:
            sock.close()
        process.terminate()
        assert process.wait(timeout=30) == 0  # it still stops when told
