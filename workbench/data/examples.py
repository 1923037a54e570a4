"""The examples' own evaluation data: the digits test split and a fixed corpus of English sentences.

The sentence corpus needs no download: it is cut from the docstrings of a fixed list of Python
standard-library modules, filtered to plain sentences of 5 to 60 words, deduplicated and ordered
by their sha256 (deterministic, and it mixes the modules).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from workbench.data.base import DATASET_SOURCES, Dataset
from workbench.errors import UsageError
from workbench.recipe.spec import DataSpec

CORPUS_MODULES = (
    "argparse", "asyncio", "base64", "calendar", "collections", "contextlib", "csv", "datetime",
    "decimal", "difflib", "functools", "gzip", "inspect", "ipaddress", "itertools", "json",
    "logging", "os", "pathlib", "pickle", "random", "shutil", "statistics", "subprocess",
    "tarfile", "tempfile", "textwrap", "threading", "urllib.parse", "zipfile",
)  # fmt: skip
MIN_WORDS, MAX_WORDS = 5, 60
DEFAULT_SEQ_LEN = 128
CALIBRATION_SAMPLES = 512
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
# Code, markup and doctest fragments are not the English a sentence encoder is judged on.
_NOT_PROSE = re.compile(r">>>|[{}=<>\[\]|]|::|\.\.\.|__|\w\(\)")


def digits_dataset(spec: DataSpec) -> Dataset:
    """The 360 held-out digits images (N, 1, 8, 8) float32 with int64 labels; calibration from the training split."""
    from workbench.models.examples.digits import digits_split

    split = digits_split()
    return Dataset({"input": split.x_test}, split.y_test, calibration={"input": split.x_train[:CALIBRATION_SAMPLES]})


def _docstrings(module: ModuleType) -> Iterator[str]:
    yield inspect.getdoc(module) or ""
    for name in sorted(vars(module)):
        item = getattr(module, name)
        public = not name.startswith("_") and getattr(item, "__module__", None) == module.__name__
        if public and (inspect.isfunction(item) or inspect.isclass(item) or inspect.isbuiltin(item)):
            yield inspect.getdoc(item) or ""


def _sentences(doc: str) -> Iterator[str]:
    for paragraph in re.split(r"\n\s*\n", doc):
        for sentence in _SENTENCE_END.split(" ".join(paragraph.split())):
            words = len(sentence.split())
            prose = sentence[:1].isupper() and sentence.endswith(".") and not _NOT_PROSE.search(sentence)
            if prose and MIN_WORDS <= words <= MAX_WORDS:
                yield sentence


@functools.cache
def sentence_corpus() -> tuple[str, ...]:
    """Deduplicated English sentences from standard-library docstrings, in a fixed order."""
    return sentences_from(CORPUS_MODULES)


def sentences_from(modules: tuple[str, ...]) -> tuple[str, ...]:
    """The prose sentences of some modules' docstrings, deduplicated, ordered by their sha256."""
    found = {
        sentence
        for name in modules
        for doc in _docstrings(importlib.import_module(name))
        for sentence in _sentences(doc)
    }
    return tuple(sorted(found, key=lambda s: hashlib.sha256(s.encode()).hexdigest()))


def minilm_dataset(spec: DataSpec) -> Dataset:
    """The corpus tokenized to ``options.seq_len`` (default 128): input_ids and attention_mask, int64.

    Options: ``seq_len``; ``fill: true`` packs consecutive sentences into passages that fill every
    row's ``seq_len`` tokens (no padding: what "sequence length 128" means for throughput), where the
    default gives one sentence per row, padded (about 19 of 128 tokens are real).
    """
    from workbench.models.examples.minilm import load_tokenizer

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


EXAMPLE_DATASETS: dict[str, Callable[[DataSpec], Dataset]] = {"digits": digits_dataset, "minilm": minilm_dataset}


@DATASET_SOURCES.register("example")
def example_dataset(spec: DataSpec, cache: Path) -> Dataset:
    """Dispatch ``source: example`` on ``name`` (``load_dataset`` fills it from the model)."""
    try:
        make = EXAMPLE_DATASETS[spec.name or ""]
    except KeyError:
        available = ", ".join(sorted(EXAMPLE_DATASETS))
        raise UsageError(f"unknown example dataset {spec.name!r}; available: {available}") from None
    return make(spec)
