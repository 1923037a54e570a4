"""A fixed corpus of English sentences that needs no download: the minilm example's data.

It is cut from the docstrings of a fixed list of Python standard-library modules, filtered to
plain sentences of 5 to 60 words, deduplicated and ordered by their sha256 (deterministic, and it
mixes the modules).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import re
from collections.abc import Iterator
from types import ModuleType

CORPUS_MODULES = (
    "argparse", "asyncio", "base64", "calendar", "collections", "contextlib", "csv", "datetime",
    "decimal", "difflib", "functools", "gzip", "inspect", "ipaddress", "itertools", "json",
    "logging", "os", "pathlib", "pickle", "random", "shutil", "statistics", "subprocess",
    "tarfile", "tempfile", "textwrap", "threading", "urllib.parse", "zipfile",
)  # fmt: skip
MIN_WORDS, MAX_WORDS = 5, 60
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
# Code, markup and doctest fragments are not the English a sentence encoder is judged on.
_NOT_PROSE = re.compile(r">>>|[{}=<>\[\]|]|::|\.\.\.|__|\w\(\)")


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
