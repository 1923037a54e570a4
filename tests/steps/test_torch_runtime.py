"""The torch runtime serves every torch artifact the steps write, over real HTTP, from read-only request buffers."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving_harness.config import RuntimeSettings, ServingConfig
from serving_harness.model import ModelConfig
from serving_harness.model_dir import runtime_for
from serving_harness.protocol.codec import decode_infer_response, encode_infer_request
from serving_harness.runtimes.torch import TorchRuntime
from workbench.artifact import DEFAULT_RUNTIME, Artifact
from workbench.data import Dataset
from workbench.models import SourceModel
from workbench.recipe.spec import StepSpec
from workbench.steps import StepContext
from workbench.sweep.cache import build

sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))  # serving_support: the real server fixture
from serving_support import running_server

PIPELINES = {
    "eager": (),
    "torchscript": (StepSpec(name="export.torchscript"),),
    "exported": (StepSpec(name="export.torch_export"),),
    "int8": (StepSpec(name="quantize.torch_dynamic"),),
}


@pytest.fixture(scope="module")
def digits_artifacts(digits_source: SourceModel, digits_context: StepContext, cache_dir: Path) -> dict[str, Artifact]:
    """The digits CNN as each torch format, built through the cache like a run does."""
    return {name: build(digits_source.artifact, steps, digits_context, cache_dir) for name, steps in PIPELINES.items()}


def test_every_torch_format_defaults_to_the_torch_runtime(digits_artifacts: dict[str, Artifact]) -> None:
    for artifact in digits_artifacts.values():
        assert DEFAULT_RUNTIME[artifact.format] == "torch"
        assert runtime_for(artifact.path) == "torch"  # what `serving_harness serve DIR` picks


def test_read_only_inputs_are_copied_not_shared(digits_artifacts: dict[str, Artifact], digits_dataset: Dataset) -> None:
    runtime = TorchRuntime()
    runtime.load(digits_artifacts["torchscript"].path, RuntimeSettings(name="torch", intra_op_threads=1))
    images = digits_dataset.batch(0, 4)["input"]
    frozen = np.frombuffer(images.tobytes(), dtype=np.float32).reshape(images.shape)  # as a binary request decodes
    assert not frozen.flags.writeable

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns (UserWarning) when handed a read-only array
        logits = runtime.infer({"input": frozen})["logits"]

    np.testing.assert_array_equal(logits, runtime.infer({"input": images.copy()})["logits"])


def test_a_real_server_serves_each_format_with_eager_numbers(
    digits_artifacts: dict[str, Artifact], digits_dataset: Dataset
) -> None:
    models = [ModelConfig(name=name, path=artifact.path) for name, artifact in digits_artifacts.items()]
    settings = ServingConfig(runtime=RuntimeSettings(name="torch", intra_op_threads=1))
    images = digits_dataset.batch(0, 8)["input"]
    content, headers = encode_infer_request({"input": images}, binary_data=True, binary_data_output=True)
    outputs: dict[str, np.ndarray] = {}
    platforms: dict[str, str] = {}

    with running_server(models, settings) as url, httpx.Client(base_url=url, timeout=30) as client:
        for name in digits_artifacts:
            response = client.post(f"/v2/models/{name}/infer", content=content, headers=headers)
            assert response.status_code == 200, response.text
            length = response.headers.get("inference-header-content-length")
            outputs[name] = decode_infer_response(response.content, int(length) if length else None)[1]["logits"]
            platforms[name] = client.get(f"/v2/models/{name}").json()["platform"]

    assert platforms == {
        "eager": "pytorch_eager",
        "torchscript": "pytorch_torchscript",
        "exported": "pytorch_export",
        "int8": "pytorch_torchscript",
    }
    for name in ("torchscript", "exported"):
        np.testing.assert_allclose(outputs[name], outputs["eager"], atol=1e-5, rtol=0)
    assert (outputs["int8"].argmax(1) == outputs["eager"].argmax(1)).mean() >= 7 / 8
