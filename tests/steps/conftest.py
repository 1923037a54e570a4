"""Step fixtures: contexts built from the real datasets, and the digits model exported once."""

from __future__ import annotations

import pytest

from workbench.artifact import Artifact
from workbench.data import Dataset
from workbench.models import SourceModel
from workbench.steps import ExportOnnx, ExportOnnxConfig, StepContext


def context_for(source: SourceModel, dataset: Dataset) -> StepContext:
    """What the runner hands to steps: a 2-sample batch and the source's dynamic axes."""
    return StepContext(
        sample_inputs=dataset.batch(0, 2),
        dynamic_axes=source.dynamic_axes,
        output_names=tuple(spec.name for spec in source.outputs),
    )


@pytest.fixture(scope="session")
def digits_context(digits_source: SourceModel, digits_dataset: Dataset) -> StepContext:
    return context_for(digits_source, digits_dataset)


@pytest.fixture(scope="session")
def digits_onnx(
    digits_source: SourceModel, digits_context: StepContext, tmp_path_factory: pytest.TempPathFactory
) -> Artifact:
    """The digits CNN exported with the default config (dynamo, opset 18)."""
    workdir = tmp_path_factory.mktemp("digits-onnx") / "out"
    return ExportOnnx().apply(digits_source.artifact, ExportOnnxConfig(), workdir, digits_context)


@pytest.fixture(scope="session")
def minilm_context(minilm_source: SourceModel, minilm_dataset: Dataset) -> StepContext:
    return context_for(minilm_source, minilm_dataset)
