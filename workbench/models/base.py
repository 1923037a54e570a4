"""Model sources turn a ModelSpec into a SourceModel: the fp32 artifact every variant starts from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from serving_harness.runtimes.base import TensorSpec
from workbench.artifact import Artifact
from workbench.recipe.spec import ModelSpec
from workbench.registry import Registry


@dataclass(frozen=True)
class SourceModel:
    """The model as given: a torch artifact (factory directory) or an ONNX file, with its schema.

    ``dynamic_axes`` names the dynamic axes of every input and output, batch first, e.g.
    ``{"input": {0: "batch"}, "logits": {0: "batch"}}``; export steps use it.
    """

    artifact: Artifact
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dynamic_axes: dict[str, dict[int, str]]


# A model source: (spec, cache directory owned by the source) -> SourceModel.
ModelSource = Callable[[ModelSpec, Path], SourceModel]
MODEL_SOURCES: Registry[ModelSource] = Registry("model_sources", builtins="workbench.models")
