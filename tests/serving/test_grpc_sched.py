"""gRPC throughput (issue 17): grpc.aio's helper threads must not preempt the event loop (``serving_harness.sched``).

Linux only: the scheduling policy is a Linux thread attribute; elsewhere ``yield_on_wake`` changes nothing.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
import serving_support as support

from serving_harness.protocol.grpc_gen import grpc_predict_v2_pb2 as pb
from serving_harness.protocol.grpc_gen import grpc_predict_v2_pb2_grpc as pb_grpc
from serving_harness.sched import yield_on_wake

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policies")


def _policy_of_thread_started(inside: bool) -> int:
    """The policy a thread sees when started inside ``yield_on_wake()`` (or after it)."""
    seen: list[int] = []

    def record() -> None:
        seen.append(os.sched_getscheduler(0))

    thread = threading.Thread(target=record)
    if inside:
        with yield_on_wake():
            thread.start()
    else:
        thread.start()
    thread.join(timeout=10)
    return seen[0]


def test_threads_started_inside_run_sched_batch_and_the_caller_gets_its_policy_back() -> None:
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    assert _policy_of_thread_started(inside=True) == os.SCHED_BATCH
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller (the event loop's thread) is restored
    assert _policy_of_thread_started(inside=False) == os.SCHED_OTHER


def _thread_policies(pid: int) -> dict[int, tuple[str, int]]:
    """Each thread of ``pid``: its name (comm) and scheduling policy."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found[int(task.name)] = ((task / "comm").read_text().strip(), os.sched_getscheduler(int(task.name)))
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            continue
    return found


def test_served_grpc_threads_yield_to_the_event_loop(models_dir: Path) -> None:
    """A real harness process: grpc's I/O threads run SCHED_BATCH, the event loop (main thread) does not."""
    port, grpc_port = support.free_port(), support.free_port()
    command = [sys.executable, "-m", "serving_harness", "serve", "--model", str(models_dir / "affine.onnx")]
    command += ["--name", "affine", "--port", str(port), "--grpc-port", str(grpc_port), "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        support.wait_for(f"http://127.0.0.1:{port}/v2/health/ready")
        request = pb.ModelInferRequest(model_name="affine")
        x = np.ones((1, 4), dtype=np.float32)
        request.inputs.add(name="x", datatype="FP32", shape=x.shape)
        request.raw_input_contents.append(x.tobytes())
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            assert pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10).outputs
        threads = _thread_policies(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert threads[process.pid][1] == os.SCHED_OTHER  # uvicorn's loop keeps its policy
    grpc_io = [policy for name, policy in threads.values() if name == "event_engine"]
    assert grpc_io, f"no grpc I/O thread among {sorted(n for n, _ in threads.values())}"
    assert set(grpc_io) == {os.SCHED_BATCH}


class _Echo:
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return inputs


def test_model_instance_threads_yield_to_the_event_loop() -> None:
    """The batcher's instance threads wake on every request: they must not preempt the loop either."""
    from serving_harness.batcher import Batcher
    from serving_harness.config import BatchingSettings

    batcher = Batcher([_Echo(), _Echo()], input_names=["x"], batching=BatchingSettings(), max_queue_size=4)  # type: ignore[list-item]
    try:
        policies = {os.sched_getscheduler(t.native_id or 0) for t in batcher._threads}
    finally:
        asyncio.run(batcher.close(5.0))
    assert policies == {os.SCHED_BATCH}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
