"""Inline inference (``batching.inline``): a request computed on the event-loop thread, no thread hop.

The batcher alone (with test_batcher's fake runtime), then a real server whose answers, metrics and
errors must match the threaded path's, then the settings that refuse inline where it cannot apply.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import serving_support as support
from pydantic import ValidationError
from serving_support import infer_json, metric_value
from test_batcher import FakeRuntime, Recorder, rows, run

from serving_harness.__main__ import _parser, main, resolve
from serving_harness.batcher import Batcher, InferOutcome
from serving_harness.config import BatchingSettings, ServingConfig
from serving_harness.errors import InferenceFailed, RequestTimeout
from serving_harness.model import ModelConfig

INLINE = BatchingSettings(inline=True)


def inline_batcher(runtime: FakeRuntime, *, timeout_s: float = 30.0, observer: Recorder | None = None) -> Batcher:
    return Batcher([runtime], input_names=["x"], batching=INLINE, max_queue_size=1, timeout_s=timeout_s,
                   observer=observer)  # fmt: skip


class ThreadRecordingRuntime(FakeRuntime):
    """FakeRuntime that remembers which thread called it."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.threads.append(threading.get_ident())
        return super().infer(inputs)


# ------------------------------------------------------------------------------------ the batcher


def test_inline_computes_on_the_loop_thread_with_no_queue_time() -> None:
    runtime = ThreadRecordingRuntime()
    recorder = Recorder()
    batcher = inline_batcher(runtime, observer=recorder)

    async def scenario() -> tuple[InferOutcome, int]:
        return await batcher.infer({"x": rows(0, 2)}, 2), threading.get_ident()

    outcome, loop_thread = run(scenario)

    np.testing.assert_array_equal(outcome.outputs["y"], rows(0, 2) * 2)
    assert runtime.threads == [loop_thread]
    assert (outcome.queue_s, outcome.batch_size) == (0.0, 2)
    assert outcome.compute_s > 0
    assert recorder.batch_rows == [2]


def test_inline_requests_never_queue_so_the_queue_limit_never_refuses() -> None:
    batcher = inline_batcher(FakeRuntime())  # max_queue_size=1

    async def scenario() -> list[InferOutcome]:
        return await asyncio.gather(*(batcher.infer({"x": rows(i, 1)}, 1) for i in range(5)))

    outcomes = run(scenario)

    for i, outcome in enumerate(outcomes):
        np.testing.assert_array_equal(outcome.outputs["y"], rows(i, 1) * 2)


def test_inline_model_error_is_inference_failed_with_the_threaded_message() -> None:
    inline = inline_batcher(FakeRuntime(fail=True))
    threaded = Batcher([FakeRuntime(fail=True)], input_names=["x"], batching=BatchingSettings(), max_queue_size=1)

    with pytest.raises(InferenceFailed) as inline_error:
        run(lambda: inline.infer({"x": rows(0, 1)}, 1))
    with pytest.raises(InferenceFailed) as threaded_error:
        run(lambda: threaded.infer({"x": rows(0, 1)}, 1))

    assert str(inline_error.value) == str(threaded_error.value) == "the model failed: ValueError: boom"


def test_an_inline_call_longer_than_the_timeout_answers_request_timeout() -> None:
    batcher = inline_batcher(FakeRuntime(delay_s=0.05), timeout_s=0.01)

    with pytest.raises(RequestTimeout):
        run(lambda: batcher.infer({"x": rows(0, 1)}, 1))


def test_an_inline_batcher_starts_no_instance_thread() -> None:
    before = {t.name for t in threading.enumerate()}
    batcher = inline_batcher(FakeRuntime())
    run(batcher.close)

    assert {t.name for t in threading.enumerate()} - before == set()


# ------------------------------------------------------------------------------ a real server


@pytest.fixture(scope="module")
def urls(models_dir: Path) -> Iterator[dict[str, str]]:
    models = [ModelConfig("affine", models_dir / "affine.onnx"), ModelConfig("lookup", models_dir / "lookup.onnx")]
    with (
        support.running_server(models, ServingConfig(batching=INLINE)) as inline,
        support.running_server(models, ServingConfig()) as threaded,
    ):
        yield {"inline": inline, "threaded": threaded}


def test_inline_answers_exactly_what_the_threaded_path_answers(urls: dict[str, str]) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    answers = {k: httpx.post(f"{url}/v2/models/affine/infer", json=infer_json(x)) for k, url in urls.items()}

    assert answers["inline"].status_code == answers["threaded"].status_code == 200
    assert answers["inline"].json() == answers["threaded"].json()


def test_inline_requests_are_counted_and_timed(urls: dict[str, str]) -> None:
    url = urls["inline"]
    for _ in range(3):
        assert httpx.post(f"{url}/v2/models/affine/infer", json=infer_json(np.ones((2, 4), np.float32))).is_success

    metrics = httpx.get(f"{url}/metrics").text
    assert metric_value(metrics, "sh_requests_total", model="affine", status="200") >= 3
    assert metric_value(metrics, "sh_compute_duration_seconds_count", model="affine") >= 3
    assert metric_value(metrics, "sh_queue_duration_seconds_count", model="affine") >= 3
    assert metric_value(metrics, "sh_batch_size_sum", model="affine") >= 6


def test_an_inline_model_error_answers_oip_500_json_like_the_threaded_path(urls: dict[str, str]) -> None:
    bad_id = np.array([42], dtype=np.int64)  # outside the 10-row table: the runtime raises
    answers = {
        k: httpx.post(f"{url}/v2/models/lookup/infer", json=infer_json(bad_id, name="ids", datatype="INT64"))
        for k, url in urls.items()
    }

    assert answers["inline"].status_code == answers["threaded"].status_code == 500
    assert answers["inline"].headers["content-type"] == "application/json"
    assert answers["inline"].json() == answers["threaded"].json()
    assert "the model failed" in answers["inline"].json()["error"]
    assert httpx.get(f"{urls['inline']}/v2/health/ready").status_code == 200  # the loop is still serving


# ------------------------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("build", "names"),
    [
        (lambda: BatchingSettings(inline=True, max_batch_size=8), "max_batch_size=1"),
        (lambda: ServingConfig(instances=2, batching=INLINE), "instances=1"),
    ],
)
def test_inline_refuses_batching_and_several_instances(build: Callable[[], object], names: str) -> None:
    with pytest.raises(ValidationError, match=names):
        build()


def test_the_inline_flag_and_variable_set_the_field(models_dir: Path) -> None:
    model = str(models_dir / "affine.onnx")

    _, by_flag = resolve(_parser().parse_args(["serve", "--model", model, "--inline"]), {})
    _, by_variable = resolve(_parser().parse_args(["serve", "--model", model]), {"SH_BATCHING__INLINE": "true"})
    _, unset = resolve(_parser().parse_args(["serve", "--model", model]), {})

    assert by_flag.batching.inline and by_variable.batching.inline
    assert not unset.batching.inline


def test_serve_refuses_inline_with_several_instances(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["serve", "--model", str(models_dir / "affine.onnx"), "--inline", "--instances", "2"])

    assert status == 2
    assert "inline" in capsys.readouterr().err
