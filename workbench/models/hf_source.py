"""``source: hf``: a Hugging Face checkpoint directory (what ``save_pretrained`` writes), as a torch artifact.

The checkpoint becomes a torch factory artifact, the way the MiniLM example is built: the factory
(:func:`build_hf_module`) rebuilds the architecture from the config, which the artifact carries in its
``kwargs`` (so the checkpoint directory is not needed once the artifact exists), and ``weights.pt``
holds the checkpoint's weights. Every step that takes a torch artifact applies: ``export.onnx``, then
the ONNX Runtime steps (``quantize.ort_dynamic``, ``compile.ort_graph`` with transformer fusion), and
bundles ship the ONNX file, never the factory.

Tasks and what the served model returns (one tensor, batch first):

- ``sequence-classification``: ``logits`` (batch, labels)
- ``token-classification``: ``logits`` (batch, sequence, labels)
- ``feature-extraction``: ``last_hidden_state`` (batch, sequence, hidden)

``model.options.attn_implementation`` (default ``eager``) picks transformers' attention code.
Inputs are the token tensors the model's tokenizer makes and its ``forward`` takes, in the order
``input_ids``, ``attention_mask``, ``token_type_ids``, all INT64 (batch, sequence).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from serving_harness.runtimes.base import TensorSpec
from serving_harness.runtimes.torch import TORCH_MODEL_FILE
from workbench.artifact import hash_path
from workbench.errors import MissingDependencyError, UsageError
from workbench.models.base import MODEL_SOURCES, SourceModel
from workbench.models.torch_source import infer_outputs, torch_source_model, write_torch_artifact
from workbench.recipe.spec import HFTask, ModelSpec

__all__ = ["FACTORY", "HFTaskModule", "build_hf_module", "hf_source", "task_from_config"]

logger = logging.getLogger(__name__)

# Bump when FACTORY or HFTaskModule changes: it invalidates cached artifacts.
HF_SOURCE_VERSION = 1
FACTORY = "workbench.models.hf_source:build_hf_module"
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Eager attention exports the MatMul/Softmax pattern ONNX Runtime's transformer optimizer fuses into
# MultiHeadAttention (compile.ort_graph); the SDPA path exports a graph it leaves unfused. A recipe may
# choose another with model.options.attn_implementation.
DEFAULT_ATTENTION = "eager"
MISSING_HF = "source 'hf' needs the [hf] extra: pip install -e '.[hf]'"


@dataclass(frozen=True)
class _Task:
    auto_class: str  # the transformers Auto class that builds the model for this task
    output: str  # the field of the model's output that is served
    architecture_suffix: str  # how a config's ``architectures`` entry for this task ends


_TASKS: dict[str, _Task] = {
    "sequence-classification": _Task("AutoModelForSequenceClassification", "logits", "ForSequenceClassification"),
    "token-classification": _Task("AutoModelForTokenClassification", "logits", "ForTokenClassification"),
    "feature-extraction": _Task("AutoModel", "last_hidden_state", "Model"),
}


def _offline() -> None:
    """Local checkpoints only: keep transformers and huggingface_hub from reaching for the hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _transformers() -> Any:
    _offline()
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError(MISSING_HF) from None
    return transformers


class HFTaskModule(nn.Module):
    """A transformers model that takes token tensors positionally and returns its task's one output tensor."""

    def __init__(self, model: nn.Module, output: str) -> None:
        super().__init__()
        # The module computes no loss. Setting it keeps transformers' loss_function property from
        # warning about loss_type when an exporter walks the module's attributes (as in the MiniLM example).
        object.__setattr__(model, "_loss_function", None)
        self.model = model
        self.output = output

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        named = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        given = {name: tensor for name, tensor in named.items() if tensor is not None}
        result: torch.Tensor = getattr(self.model(**given, return_dict=True), self.output)
        return result


def build_hf_module(config: dict[str, Any], task: str, attn_implementation: str = DEFAULT_ATTENTION) -> HFTaskModule:
    """The factory a ``source: hf`` artifact names: the architecture from ``config`` (a config's
    ``to_dict()``), randomly initialised; the weights come from the artifact's ``weights.pt``."""
    transformers = _transformers()
    config_class = transformers.CONFIG_MAPPING[config["model_type"]]
    auto_class = getattr(transformers, _TASKS[task].auto_class)
    model = auto_class.from_config(config_class.from_dict(config), attn_implementation=attn_implementation)
    return HFTaskModule(model, _TASKS[task].output)


def task_from_config(architectures: list[str] | None, *, where: str) -> HFTask:
    """The task a config's ``architectures`` names (``BertForSequenceClassification`` → sequence-classification)."""
    for architecture in architectures or ():
        for name, task in _TASKS.items():
            if architecture.endswith(task.architecture_suffix):
                return name  # type: ignore[return-value]  # _TASKS's keys are the HFTask literals
    raise UsageError(
        f"{where}: cannot tell the task from architectures {architectures or []}; "
        f"give model.task ({' | '.join(_TASKS)})"
    )


@MODEL_SOURCES.register("hf")
def hf_source(spec: ModelSpec, cache: Path) -> SourceModel:
    """A ``save_pretrained`` directory as a cached torch artifact (written once per checkpoint content and spec)."""
    checkpoint = _checkpoint_dir(spec.path or "")
    directory = cache / "sources" / f"hf-v{HF_SOURCE_VERSION}-{_source_key(spec, checkpoint)[:24]}"
    if not (directory / TORCH_MODEL_FILE).exists():
        _write_artifact(spec, checkpoint, directory)
    return torch_source_model(directory)


def _checkpoint_dir(path: str) -> Path:
    found = Path(path).expanduser().resolve()
    if not (found / "config.json").is_file():
        raise UsageError(f"model.path {path!r}: not a Hugging Face checkpoint directory (no config.json)")
    return found


def _source_key(spec: ModelSpec, checkpoint: Path) -> str:
    digest = hashlib.sha256(spec.model_dump_json(exclude={"path"}).encode())
    digest.update(hash_path(checkpoint).encode())
    return digest.hexdigest()


def _write_artifact(spec: ModelSpec, checkpoint: Path, directory: Path) -> None:
    transformers = _transformers()
    config = transformers.AutoConfig.from_pretrained(str(checkpoint))
    task = spec.task or task_from_config(config.architectures, where=f"model.path {spec.path!r}")
    logger.info("writing the %s artifact of %s to %s", task, checkpoint, directory)
    attention = str(spec.options.get("attn_implementation", DEFAULT_ATTENTION))
    module = _pretrained(transformers, checkpoint, task, attention)
    inputs = spec.inputs or _token_inputs(transformers, checkpoint, module.model)
    outputs = spec.outputs or _named_outputs(module, inputs)
    config_dict = json.loads(config.to_json_string(use_diff=False))
    kwargs = {"config": config_dict, "task": task, "attn_implementation": attention}
    write_torch_artifact(
        directory, factory=FACTORY, kwargs=kwargs, inputs=inputs, outputs=outputs, state_dict=module.state_dict()
    )


def _pretrained(transformers: Any, checkpoint: Path, task: str, attention: str) -> HFTaskModule:
    """The checkpoint's weights in its task's model; a head the checkpoint lacks starts seeded (transformers warns)."""
    torch.manual_seed(0)
    auto_class = getattr(transformers, _TASKS[task].auto_class)
    model = auto_class.from_pretrained(str(checkpoint), attn_implementation=attention)
    return HFTaskModule(model, _TASKS[task].output).eval()


def _token_inputs(transformers: Any, checkpoint: Path, model: nn.Module) -> tuple[TensorSpec, ...]:
    """The token tensors both the tokenizer makes (when the checkpoint has one) and ``forward`` takes."""
    takes = set(inspect.signature(model.forward).parameters)
    made = set(TOKEN_INPUTS)
    try:
        made = set(transformers.AutoTokenizer.from_pretrained(str(checkpoint)).model_input_names)
    except (OSError, ValueError):
        logger.debug("no tokenizer in %s: the inputs are what forward takes", checkpoint)
    names = [name for name in TOKEN_INPUTS if name in takes and name in made]
    if "input_ids" not in names:
        raise UsageError(f"model.path {str(checkpoint)!r}: the model does not take input_ids; give model.inputs")
    return tuple(TensorSpec(name=name, datatype="INT64", shape=(-1, -1)) for name in names)


def _named_outputs(module: HFTaskModule, inputs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """The output's schema learnt by running the model (infer_outputs), under the task's output name."""
    (probed,) = infer_outputs(module, inputs)
    return (TensorSpec(name=module.output, datatype=probed.datatype, shape=probed.shape),)
