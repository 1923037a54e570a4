"""``source: text``: rows of a local CSV, JSONL or Parquet file, tokenized into a transformer's inputs.

::

    data:
      source: text
      path: reviews.csv
      text_column: text
      label_column: label            # optional: per-row labels, or per-word labels for token classification
      tokenizer: {max_length: 64, padding: max_length, truncation: true}   # path: the hf model's by default

The inputs are the token tensors the tokenizer makes (``input_ids``, ``attention_mask``, and
``token_type_ids`` where its model takes them), INT64 (rows, tokens). Labels:

- one per row (sequence classification): integers, or names found in the model config's ``label2id``;
- one per word (token classification): the text column holds each row's words (a list, in JSONL or
  Parquet) and the label column a list of the same length. A word's label goes to its first token;
  its other tokens, special tokens and padding get ``IGNORE_INDEX`` (-100), which ``token_accuracy``
  skips (the convention transformers' token-classification training uses).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.data.base import DATASET_SOURCES, METRICS, Arrays, Dataset, Metric
from workbench.data.files import make_dataset
from workbench.errors import MeasurementError, MissingDependencyError, UsageError
from workbench.recipe.spec import DataSpec, ModelSpec, TokenizerSpec

__all__ = ["IGNORE_INDEX", "read_table", "text_dataset", "token_accuracy", "with_model_tokenizer"]

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": pd.read_csv,
    ".jsonl": lambda path: pd.read_json(path, lines=True),
    ".ndjson": lambda path: pd.read_json(path, lines=True),
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
}


def with_model_tokenizer(spec: DataSpec, model: ModelSpec) -> DataSpec:
    """``spec`` with the tokenizer path filled from an ``hf`` model's checkpoint when the recipe gives none."""
    if spec.source != "text" or spec.tokenizer.path is not None:
        return spec
    if model.source != "hf":
        raise UsageError("data.source 'text' needs data.tokenizer.path when the model is not source: hf")
    return spec.model_copy(update={"tokenizer": spec.tokenizer.model_copy(update={"path": model.path})})


def read_table(path: str | None) -> pd.DataFrame:
    """The rows of a CSV, JSONL (``.jsonl``, ``.ndjson``) or Parquet (``.parquet``, ``.pq``) file."""
    found = Path(path or "").expanduser()
    if not path or not found.is_file():
        raise UsageError(f"data.path {path!r}: no such file")
    reader = _READERS.get(found.suffix.lower())
    if reader is None:
        raise UsageError(f"data.path {path!r}: expected a {', '.join(_READERS)} file")
    frame = reader(found)
    if frame.empty:
        raise UsageError(f"data.path {path!r} has no rows")
    return frame


@DATASET_SOURCES.register("text")
def text_dataset(spec: DataSpec, cache: Path) -> Dataset:
    """The file's rows tokenized (all of them: ``data.limit`` keeps the first for scoring, the rest calibrate)."""
    frame = read_table(spec.path)
    texts = _column(frame, spec.text_column, spec)
    labels = None if spec.label_column is None else _column(frame, spec.label_column, spec)
    tokenizer = _tokenizer(spec.tokenizer)
    if _per_word(texts, labels):
        inputs, label_array = _encode_words(tokenizer, spec.tokenizer, texts, labels, spec.path)
    else:
        inputs = _encode(tokenizer, spec.tokenizer, [str(text) for text in texts])
        label_array = None if labels is None else _row_labels(labels, spec.tokenizer.path)
    return make_dataset(inputs, label_array, where=f"data.path {spec.path}")


def _column(frame: pd.DataFrame, name: str, spec: DataSpec) -> list[Any]:
    if name not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise UsageError(f"data.path {spec.path!r} has no column {name!r} (columns: {columns})")
    return list(frame[name])


def _tokenizer(settings: TokenizerSpec) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise MissingDependencyError("source 'text' needs the [hf] extra: pip install -e '.[hf]'") from None
    try:
        return AutoTokenizer.from_pretrained(str(Path(settings.path or "").expanduser()))  # type: ignore[no-untyped-call]
    except (OSError, ValueError) as exc:
        raise UsageError(f"data.tokenizer.path {settings.path!r}: no tokenizer there ({exc})") from None


def _call_options(settings: TokenizerSpec) -> dict[str, Any]:
    return {"padding": settings.padding, "truncation": settings.truncation, "max_length": settings.max_length}


def _keep_inputs(tokenizer: Any, encoded: Any) -> Arrays:
    """The token tensors the tokenizer's model takes, as int64 (the ONNX graphs' input type)."""
    names = [name for name in TOKEN_INPUTS if name in tokenizer.model_input_names and name in encoded]
    return {name: np.asarray(encoded[name], dtype=np.int64) for name in names}


def _encode(tokenizer: Any, settings: TokenizerSpec, texts: list[str]) -> Arrays:
    encoded = tokenizer(texts, return_tensors="np", **_call_options(settings))
    return _keep_inputs(tokenizer, encoded)


def _per_word(texts: Sequence[Any], labels: Sequence[Any] | None) -> bool:
    """Token classification data: rows of words, or of per-word labels."""
    first_label = None if labels is None else labels[0]
    return _is_sequence(texts[0]) or _is_sequence(first_label)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, list | tuple | np.ndarray)


def _encode_words(
    tokenizer: Any, settings: TokenizerSpec, texts: Sequence[Any], labels: Sequence[Any] | None, path: str | None
) -> tuple[Arrays, np.ndarray | None]:
    if not getattr(tokenizer, "is_fast", False):
        raise UsageError(f"data.tokenizer.path {settings.path!r}: per-word labels need a fast tokenizer")
    words = [_words(row, path) for row in texts]
    encoded = tokenizer(words, is_split_into_words=True, return_tensors="np", **_call_options(settings))
    if labels is None:
        return _keep_inputs(tokenizer, encoded), None
    per_word = _word_labels(labels, [len(row) for row in words], settings.path, path)
    aligned = [_align(encoded.word_ids(i), row) for i, row in enumerate(per_word)]
    return _keep_inputs(tokenizer, encoded), np.asarray(aligned, dtype=np.int64)


def _words(row: Any, path: str | None) -> list[str]:
    if _is_sequence(row):
        return [str(word) for word in row]
    if isinstance(row, str):
        return row.split()
    raise UsageError(f"data.path {path!r}: expected a row of words, got {type(row).__name__}")


def _word_labels(labels: Sequence[Any], counts: list[int], model_dir: str | None, path: str | None) -> list[list[int]]:
    """Each row's per-word labels as integers (names through label2id), checked against its word count."""
    for index, (row, count) in enumerate(zip(labels, counts, strict=True)):
        if not _is_sequence(row) or len(row) != count:
            size = len(row) if _is_sequence(row) else "not a list"
            raise UsageError(f"data.path {path!r} row {index}: {count} words but labels {size}")
    flat = _row_labels([label for row in labels for label in row], model_dir).tolist()
    starts = np.cumsum([0, *counts])
    return [flat[start:end] for start, end in itertools.pairwise(starts.tolist())]


def _align(word_ids: list[int | None], labels: list[int]) -> list[int]:
    """Each word's label on its first token; IGNORE_INDEX on the rest, special tokens and padding."""
    aligned, previous = [], None
    for word in word_ids:
        aligned.append(IGNORE_INDEX if word is None or word == previous else labels[word])
        previous = word
    return aligned


def _row_labels(labels: Sequence[Any], model_dir: str | None) -> np.ndarray:
    """Integer labels as they are; label names through the model config's ``label2id``."""
    values = np.asarray(labels)
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64)
    label2id = _label2id(model_dir)
    unknown = sorted({str(label) for label in labels} - set(label2id))
    if unknown:
        known = ", ".join(label2id) or "none"
        raise UsageError(f"labels {unknown[:5]} are not integers nor names in the model config's label2id ({known})")
    return np.asarray([label2id[str(label)] for label in labels], dtype=np.int64)


def _label2id(model_dir: str | None) -> dict[str, int]:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(Path(model_dir or "").expanduser()))
    except (OSError, ValueError):
        return {}
    return {str(name): int(index) for name, index in (config.label2id or {}).items()}


# ---------------------------------------------------------------------------------------- metric


def token_accuracy(outputs: Arrays, reference: Arrays, labels: np.ndarray | None) -> float:
    """Share of labelled tokens (label != IGNORE_INDEX) whose arg-max over the first output's last axis is right."""
    if labels is None:
        raise UsageError("metric 'token_accuracy' needs per-token labels and this dataset has none")
    if not outputs:
        raise MeasurementError("token_accuracy: the model returned no outputs")
    predicted = np.asarray(next(iter(outputs.values()))).argmax(axis=-1)
    if predicted.shape != labels.shape:
        raise MeasurementError(f"token_accuracy: predictions {predicted.shape} do not match labels {labels.shape}")
    scored = labels != IGNORE_INDEX
    if not scored.any():
        raise MeasurementError("token_accuracy: every label is IGNORE_INDEX (-100); nothing to score")
    return float(np.mean(predicted[scored] == labels[scored]))


METRICS.register("token_accuracy")(Metric(name="token_accuracy", higher_is_better=True, score=token_accuracy))
