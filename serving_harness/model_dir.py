"""Model directories: what ``python -m serving_harness serve DIR`` reads when DIR is not a bundle.

A model directory holds the artifact (``model.onnx``, another single ``.onnx`` file, or a torch artifact
directory with ``model.json``) and an optional ``serving.json`` (ServingConfig); its name is the
directory's (``--name`` and ``--model-version`` set others). A directory with a ``manifest.json`` is a
bundle, never a model directory: it is loaded only through ``serving_harness.bundle``'s checks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from serving_harness.bundle.manifest import MANIFEST_FILE
from serving_harness.errors import BundleError
from serving_harness.model import ModelConfig
from serving_harness.runtimes.torch import TORCH_MODEL_FILE

__all__ = ["MANIFEST_FILE", "SERVING_FILE", "find_artifact", "load_model_dir", "runtime_for"]

SERVING_FILE = "serving.json"
DEFAULT_ARTIFACT = "model.onnx"


def load_model_dir(directory: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The model a directory holds, and its serving settings as a dict (empty without serving.json).

    BundleError when the directory holds a manifest.json: a bundle goes through its checks, never round them.
    """
    if (directory / MANIFEST_FILE).exists() or (directory / MANIFEST_FILE).is_symlink():
        raise BundleError(f"{directory / MANIFEST_FILE}: a directory with a manifest is a bundle: load it as one")
    settings = _read_json(directory / SERVING_FILE)
    artifact = find_artifact(directory)
    return ModelConfig(name=directory.resolve().name, path=artifact), settings


def find_artifact(directory: Path) -> Path:
    """The artifact in ``directory``: model.onnx, a lone .onnx, or the directory itself with model.json."""
    if (directory / DEFAULT_ARTIFACT).is_file():
        return directory / DEFAULT_ARTIFACT
    onnx_files = sorted(directory.glob("*.onnx"))
    if len(onnx_files) == 1:
        return onnx_files[0]
    if (directory / TORCH_MODEL_FILE).is_file():
        return directory
    raise FileNotFoundError(
        f"{directory} holds no model: expected {DEFAULT_ARTIFACT}, one .onnx file or {TORCH_MODEL_FILE}"
    )


def runtime_for(artifact: Path) -> str:
    """The runtime an artifact needs by default: torch for a directory with model.json, else onnxruntime."""
    return "torch" if (artifact / TORCH_MODEL_FILE).is_file() else "onnxruntime"


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data
