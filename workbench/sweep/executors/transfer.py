"""Artifacts move between caches by content: a packed folder named by its place in the cache.

Nodes of a cluster either share the driver's cache folder (one machine, or a shared file system) or
keep their own. In the second case an artifact travels as a ``Shipment`` through Ray's object
store and is unpacked at the same relative place in the receiving cache, so a build cache entry
(``artifacts/<k2>/<key>/`` with its ``artifact.json``) stays a cache entry, and a record's recorded
artifact path reads the same on the driver. An entry already there is never unpacked again.
"""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from workbench.artifact import Artifact

SHIPPED_DIR = "shipped"  # where an artifact from outside the cache (a recipe's own ONNX file) lands


@dataclass(frozen=True)
class Shipment:
    """``unit`` (a file or folder, relative to the cache) packed as a tar; the artifact is ``unit/inner``."""

    unit: str
    inner: str
    data: bytes


def _unit_of(artifact: Artifact, cache: Path) -> tuple[Path, str]:
    """What to pack for ``artifact`` and where it goes: a whole build cache entry, or the artifact alone."""
    try:
        relative = artifact.path.resolve().relative_to(cache.resolve())
    except ValueError:  # outside the cache: named by its content
        return artifact.path, f"{SHIPPED_DIR}/{artifact.content_hash[:16]}/{artifact.path.name}"
    if relative.parts[0] == "artifacts" and len(relative.parts) > 3:
        return cache.joinpath(*relative.parts[:3]), Path(*relative.parts[:3]).as_posix()
    return artifact.path, relative.as_posix()


def pack(artifact: Artifact, cache: Path) -> Shipment:
    """``artifact`` (under ``cache``, or anywhere) as bytes that ``localize`` unpacks into another cache."""
    source, unit = _unit_of(artifact, cache)
    inner = artifact.path.resolve().relative_to(source.resolve()).as_posix() if source != artifact.path else ""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(source, arcname=Path(unit).name)
    return Shipment(unit=unit, inner="" if inner == "." else inner, data=buffer.getvalue())


def localize(artifact: Artifact, shipment: Shipment, cache: Path) -> Artifact:
    """``artifact`` as it lies in ``cache`` once ``shipment`` is unpacked there (unpacked once)."""
    target = receive(shipment, cache)
    return replace(artifact, path=target / shipment.inner if shipment.inner else target)


def receive(shipment: Shipment, cache: Path) -> Path:
    """Unpack ``shipment`` at its place in ``cache`` unless it is there already; that place."""
    target = cache / shipment.unit
    if not target.exists():
        _unpack(shipment, target)
    return target


def _unpack(shipment: Shipment, target: Path) -> None:
    """Unpack beside ``target`` and rename into place: a reader never sees half an entry."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name[:12]}-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(shipment.data)) as tar:
            tar.extractall(scratch, filter="data")  # no absolute paths, links out or devices
        try:
            (scratch / target.name).rename(target)
        except OSError:  # another task unpacked it first; theirs is identical by construction
            if not target.exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def pack_folder(folder: Path) -> bytes:
    """A folder's files as a tar (the load engine's records of a variant measured on a node)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=".")
    return buffer.getvalue()


def unpack_folder(data: bytes, folder: Path) -> None:
    """Unpack ``pack_folder``'s bytes into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(folder, filter="data")
