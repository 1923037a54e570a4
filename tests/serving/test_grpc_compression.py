"""gRPC compression both ways, seen on the wire: a loopback tap between the client and the real harness reads
the HTTP/2 frames and each gRPC message's compressed flag, so a test knows what travelled compressed.

Requests: grpcio inflates gzip and deflate itself, within ``limits.max_body_bytes``. Answers: compressed
with ``grpc_compression`` (off by default) once they reach ``MIN_COMPRESS_BYTES``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import serving_support as support

from serving_harness.config import LimitsSettings, ServingConfig
from serving_harness.model import ModelConfig
from serving_harness.protocol.compression import MIN_COMPRESS_BYTES
from serving_harness.protocol.grpc_gen import grpc_predict_v2_pb2 as pb
from serving_harness.protocol.grpc_gen import grpc_predict_v2_pb2_grpc as pb_grpc

BIG = np.arange(64 * 4, dtype=np.float32).reshape(64, 4) / 8  # two 1 KiB outputs: worth compressing
SMALL = BIG[:2]
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # what a client sends before its first frame
_DATA, _PADDED = 0, 0x8


def _message_flags(stream: bytes) -> list[int]:
    """The compressed flag (0 or 1) of the first gRPC message of each HTTP/2 stream in ``stream``."""
    flags: dict[int, int] = {}
    offset = len(_PREFACE) if stream.startswith(_PREFACE) else 0
    while offset + 9 <= len(stream):
        length = int.from_bytes(stream[offset : offset + 3], "big")
        kind, frame_flags = stream[offset + 3], stream[offset + 4]
        stream_id = int.from_bytes(stream[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
        payload = stream[offset + 9 : offset + 9 + length]
        if frame_flags & _PADDED:
            payload = payload[1:]
        if kind == _DATA and payload and stream_id not in flags:
            flags[stream_id] = payload[0]
        offset += 9 + length
    return [flags[s] for s in sorted(flags)]


class _WireTap:
    """A loopback TCP relay to ``target`` that keeps every byte each way, per connection (a grpc channel opens one)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.connections: list[tuple[bytearray, bytearray]] = []  # (client -> server, server -> client)
        self.threads: list[threading.Thread] = []
        self.sockets: list[socket.socket] = [self.listener]
        self._start(self._accept)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.listener.getsockname()[1]}"

    def _start(self, run: object) -> None:
        thread = threading.Thread(target=run, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self.threads.append(thread)

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener closes when the tap does
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target)
                self.sockets += [client, server]
                sent, received = bytearray(), bytearray()
                self.connections.append((sent, received))
                self._start(lambda c=client, s=server, r=sent: _pump(c, s, r))
                self._start(lambda c=client, s=server, r=received: _pump(s, c, r))

    def flags(self) -> tuple[list[int], list[int]]:
        """The compressed flags of the messages that travelled, call by call (connections in the order they
        opened): (requests, answers)."""
        requests = [flag for sent, _ in self.connections for flag in _message_flags(bytes(sent))]
        answers = [flag for _, received in self.connections for flag in _message_flags(bytes(received))]
        return requests, answers

    def close(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self.threads:
            thread.join(timeout=5)


def _pump(source: socket.socket, sink: socket.socket, record: bytearray) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            record += chunk
            sink.sendall(chunk)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def _tapped(models_dir: Path, settings: ServingConfig) -> Iterator[_WireTap]:
    """The affine model served over gRPC with ``settings``; yields a tap in front of it."""
    port = support.free_port()
    model = ModelConfig(name="affine", path=models_dir / "affine.onnx")
    with support.running_server([model], settings, grpc_port=port):
        tap = _WireTap(("127.0.0.1", port))
        try:
            yield tap
        finally:
            tap.close()


def _triton_infer(target: str, x: np.ndarray, algorithm: str | None) -> dict[str, np.ndarray]:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    with grpcclient.InferenceServerClient(url=target) as client:
        tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer("affine", [tensor], compression_algorithm=algorithm)
        return {n: result.as_numpy(n) for n in ("plus", "times")}


def _raw_request(x: np.ndarray) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=list(x.shape))
    return pb.ModelInferRequest(model_name="affine", inputs=[tensor], raw_input_contents=[x.tobytes()])


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_compressed_request_and_answer_round_trip_identical(models_dir: Path, algorithm: str) -> None:
    with _tapped(models_dir, ServingConfig(grpc_compression=algorithm)) as tap:  # type: ignore[arg-type]
        got = _triton_infer(tap.address, BIG, algorithm)
        plain = _triton_infer(tap.address, BIG, None)
    for name, expected in (("plus", BIG + support.BIAS), ("times", BIG * 3)):
        np.testing.assert_array_equal(got[name], expected)
        np.testing.assert_array_equal(got[name], plain[name])
    assert tap.flags() == ([1, 0], [1, 1])  # compressed both ways; a plain request's answer is compressed too


def test_answers_travel_plain_by_default_and_when_small(models_dir: Path) -> None:
    with _tapped(models_dir, ServingConfig()) as tap:
        _triton_infer(tap.address, BIG, "gzip")
    assert tap.flags() == ([1], [0])  # grpc_compression "none": answers never are

    with _tapped(models_dir, ServingConfig(grpc_compression="gzip")) as tap:
        got = _triton_infer(tap.address, SMALL, None)
    assert 2 * SMALL.nbytes < MIN_COMPRESS_BYTES
    assert tap.flags() == ([0], [0])  # below MIN_COMPRESS_BYTES compressing costs more than it saves
    np.testing.assert_array_equal(got["plus"], SMALL + support.BIAS)


def test_a_client_that_cannot_inflate_gzip_reads_small_answers_only(models_dir: Path) -> None:
    """Why grpc_compression is off by default: gRPC neither tells the server what a client accepts nor falls back."""
    identity_only = [("grpc.compression_enabled_algorithms_bitset", 1)]  # grpc-accept-encoding: identity
    with (
        _tapped(models_dir, ServingConfig(grpc_compression="gzip")) as tap,
        grpc.insecure_channel(tap.address, options=identity_only) as channel,
    ):
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        small = stub.ModelInfer(_raw_request(SMALL))
        with pytest.raises(grpc.RpcError) as unreadable:
            stub.ModelInfer(_raw_request(BIG))
    assert np.frombuffer(small.raw_output_contents[0], np.float32).size == SMALL.size
    assert unreadable.value.code() == grpc.StatusCode.INTERNAL


def test_a_request_that_inflates_past_the_body_limit_is_refused_and_the_server_goes_on(models_dir: Path) -> None:
    settings = ServingConfig(limits=LimitsSettings(max_body_bytes=64 * 1024))
    zeros = np.zeros((64 * 1024, 4), dtype=np.float32)  # 1 MiB of zeros: about 1 KiB gzipped
    with _tapped(models_dir, settings) as tap, grpc.insecure_channel(tap.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(_raw_request(zeros), compression=grpc.Compression.Gzip)
        answer = stub.ModelInfer(_raw_request(SMALL), compression=grpc.Compression.Gzip)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(tap.connections[0][0]) < 64 * 1024  # what travelled was under the limit: the inflated size counts
    assert np.frombuffer(answer.raw_output_contents[0], np.float32).size == SMALL.size
