"""Model directories: what ``python -m serving_harness serve DIR`` reads.

A directory holds the artifact (``model.onnx``, another single ``.onnx`` file, or a torch artifact
directory with ``model.json``), an optional ``serving.json`` (ServingConfig) and an optional
``manifest.json``. This is the hook for bundles: a bundle is such a directory whose manifest names
the model (``"name"``) and its artifact (``"artifact"``, relative to the directory).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from serving_harness.model import ModelConfig
from serving_harness.runtimes.torch import TORCH_MODEL_FILE

__all__ = ["MANIFEST_FILE", "SERVING_FILE", "find_artifact", "load_model_dir", "runtime_for"]

SERVING_FILE = "serving.json"
MANIFEST_FILE = "manifest.json"
DEFAULT_ARTIFACT = "model.onnx"


def load_model_dir(directory: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The model a directory holds, and its serving settings as a dict (empty without serving.json)."""
    manifest = _read_json(directory / MANIFEST_FILE)
    settings = _read_json(directory / SERVING_FILE)
    artifact = find_artifact(directory, manifest.get("artifact"))
    name = str(manifest.get("name") or directory.resolve().name)
    version = str(manifest.get("version", "1"))
    return ModelConfig(name=name, path=artifact, version=version), settings


def find_artifact(directory: Path, named: str | None = None) -> Path:
    """The artifact in ``directory``: the one the manifest names, model.onnx, a lone .onnx, or a torch dir."""
    if named:
        return directory / named
    if (directory / DEFAULT_ARTIFACT).is_file():
        return directory / DEFAULT_ARTIFACT
    onnx_files = sorted(directory.glob("*.onnx"))
    if len(onnx_files) == 1:
        return onnx_files[0]
    if (directory / TORCH_MODEL_FILE).is_file():
        return directory
    raise FileNotFoundError(
        f"{directory} holds no model: expected {DEFAULT_ARTIFACT}, one .onnx file, {TORCH_MODEL_FILE} "
        f"or a {MANIFEST_FILE} naming the artifact"
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
