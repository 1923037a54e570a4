"""Artifacts: model files with a content hash and the lineage that made them (after Olive's footprint)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from serving_harness.config import RuntimeName

ArtifactFormat = Literal["torch", "onnx", "torchscript", "torch_export", "torch_compiled", "torch_tensorrt"]

# Which serving_harness runtime serves each artifact format by default.
DEFAULT_RUNTIME: dict[str, RuntimeName] = {
    "torch": "torch",
    "onnx": "onnxruntime",
    "torchscript": "torch",
    "torch_export": "torch",
    "torch_compiled": "torch",  # the source artifact plus compile options the torch runtime applies at load
    "torch_tensorrt": "torch",  # an ExportedProgram of TensorRT engines: the torch runtime with device cuda
}


@dataclass(frozen=True)
class LineageEntry:
    """One build step: what went in, what came out."""

    step: str
    config: dict[str, Any]
    parent_hash: str
    content_hash: str
    duration_s: float
    cached: bool = False


@dataclass(frozen=True)
class Artifact:
    """A model file or directory at ``path``.

    ``figures`` holds what a step measured while building (sparsity reached, compile time); they
    travel with the artifact into the report.
    """

    path: Path
    format: ArtifactFormat
    content_hash: str = ""
    lineage: tuple[LineageEntry, ...] = ()
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        if self.path.is_dir():
            return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return self.path.stat().st_size


def hash_path(path: Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, in sorted order)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
