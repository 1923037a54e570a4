"""Artifacts: model files with a content hash and the lineage that made them (after Olive's footprint).

A run records an artifact's path relative to the cache (``recorded_path``), never this machine's absolute folder.
"""

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


def recorded_path(path: Path, root: Path) -> str:
    """``path`` as a run records it: relative to ``root`` (the cache, the run folder) when it lies under it.

    A report must mean the same on another machine, so it holds no absolute folder of this one. A path outside
    ``root`` (a model file named by the user) stays absolute: there is nothing shared to anchor it to.
    """
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def resolve_recorded_path(recorded: str, root: Path) -> Path:
    """Where a ``recorded_path`` lies on this machine: under ``root`` when relative; an absolute one (a run
    recorded before paths were relative, or a file outside ``root``) is taken as it is."""
    path = Path(recorded)
    return path if path.is_absolute() else root / path
