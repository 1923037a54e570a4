"""MiniLM through the build steps: the fp32 export is faithful, per-channel MatMul int8 keeps cosine ≥ 0.98."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from serving_harness.config import RuntimeSettings
from serving_harness.runtimes.torch import TorchRuntime
from workbench.artifact import Artifact
from workbench.data import Dataset
from workbench.data.metrics import cosine_similarity
from workbench.models import SourceModel
from workbench.steps import ExportOnnx, ExportOnnxConfig, QuantizeOrtDynamic, QuantizeOrtDynamicConfig, StepContext

pytestmark = pytest.mark.hf


def _embed(artifact: Artifact, dataset: Dataset) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(artifact.path), options, providers=["CPUExecutionProvider"])
    return {"embedding": np.concatenate([session.run(None, batch)[0] for batch in dataset.batches(32)])}


@pytest.mark.slow  # exports and quantizes a 22M-parameter BERT: ~17 s
def test_minilm_export_and_int8(
    minilm_source: SourceModel, minilm_dataset: Dataset, minilm_context: StepContext, tmp_path: Path
) -> None:
    runtime = TorchRuntime()
    runtime.load(minilm_source.artifact.path, RuntimeSettings(name="torch", intra_op_threads=2))
    reference = runtime.infer(minilm_dataset.inputs)

    exported = ExportOnnx().apply(minilm_source.artifact, ExportOnnxConfig(), tmp_path / "fp32", minilm_context)
    config = QuantizeOrtDynamicConfig(per_channel=True, op_types=("MatMul",))
    quantized = QuantizeOrtDynamic().apply(exported, config, tmp_path / "int8", minilm_context)

    assert [p.name for p in exported.path.parent.iterdir()] == ["model.onnx"]
    assert cosine_similarity(_embed(exported, minilm_dataset), reference, None) > 0.9999
    assert cosine_similarity(_embed(quantized, minilm_dataset), reference, None) >= 0.98
    assert quantized.figures["quantized_nodes"] == 36  # 6 layers x (q, k, v, out, 2 FFN)
    assert quantized.figures["size_ratio"] < 0.7  # the word embeddings stay fp32
