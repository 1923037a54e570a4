"""MiniLM through the torch steps: TorchScript is faithful, dynamic int8 keeps cosine ≥ 0.98 with 36 int8 Linears."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving_harness.config import RuntimeSettings
from serving_harness.runtimes.torch import TorchRuntime
from workbench.artifact import Artifact
from workbench.data import Dataset
from workbench.data.metrics import cosine_similarity
from workbench.models import SourceModel
from workbench.steps import (
    ExportTorchScript,
    ExportTorchScriptConfig,
    QuantizeTorchDynamic,
    QuantizeTorchDynamicConfig,
    StepContext,
)

pytestmark = [pytest.mark.hf, pytest.mark.slow]  # two traces of a 22M-parameter BERT: about 30 s here


def _embed(artifact: Artifact, dataset: Dataset) -> dict[str, np.ndarray]:
    runtime = TorchRuntime()
    runtime.load(artifact.path, RuntimeSettings(name="torch", intra_op_threads=2))
    return runtime.infer(dataset.inputs)


def test_minilm_torchscript_and_dynamic_int8(
    minilm_source: SourceModel, minilm_dataset: Dataset, minilm_context: StepContext, tmp_path: Path
) -> None:
    reference = _embed(minilm_source.artifact, minilm_dataset)

    scripted = ExportTorchScript().apply(
        minilm_source.artifact, ExportTorchScriptConfig(), tmp_path / "ts", minilm_context
    )
    quantized = QuantizeTorchDynamic().apply(
        minilm_source.artifact, QuantizeTorchDynamicConfig(), tmp_path / "int8", minilm_context
    )

    assert cosine_similarity(_embed(scripted, minilm_dataset), reference, None) > 0.9999
    assert cosine_similarity(_embed(quantized, minilm_dataset), reference, None) >= 0.98
    assert quantized.figures["quantized_ops"] == 36  # 6 layers x (q, k, v, attention out, 2 FFN)
    assert quantized.figures["size_ratio"] < 0.7  # the word embeddings stay fp32
