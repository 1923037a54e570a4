"""Artifacts between caches that are not shared: a build cache entry arrives as a cache entry, once."""

from __future__ import annotations

import json
from pathlib import Path

from workbench.artifact import Artifact, hash_path
from workbench.sweep.executors.transfer import localize, pack, pack_folder, unpack_folder


def cache_entry(cache: Path) -> Artifact:
    entry = cache / "artifacts" / "ab" / "abcdef"
    (entry / "model").mkdir(parents=True)
    (entry / "model" / "model.onnx").write_bytes(b"onnx bytes")
    (entry / "artifact.json").write_text(json.dumps({"path": "model/model.onnx", "format": "onnx"}))
    path = entry / "model" / "model.onnx"
    return Artifact(path=path, format="onnx", content_hash=hash_path(path))


def test_a_build_cache_entry_lands_at_the_same_place_in_another_cache(tmp_path: Path) -> None:
    artifact = cache_entry(tmp_path / "node")
    driver_cache = tmp_path / "driver"
    placed = localize(artifact, pack(artifact, tmp_path / "node"), driver_cache)
    assert placed.path == driver_cache / "artifacts" / "ab" / "abcdef" / "model" / "model.onnx"
    assert hash_path(placed.path) == artifact.content_hash
    assert (driver_cache / "artifacts" / "ab" / "abcdef" / "artifact.json").exists()  # still a cache entry


def test_an_entry_already_there_is_not_unpacked_again(tmp_path: Path) -> None:
    artifact = cache_entry(tmp_path / "node")
    shipment = pack(artifact, tmp_path / "node")
    first = localize(artifact, shipment, tmp_path / "driver")
    first.path.write_bytes(b"kept")
    assert localize(artifact, shipment, tmp_path / "driver").path.read_bytes() == b"kept"


def test_an_artifact_outside_the_cache_is_named_by_its_content(tmp_path: Path) -> None:
    model = tmp_path / "mine" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes(b"a recipe's own model")
    artifact = Artifact(path=model, format="onnx", content_hash=hash_path(model))
    placed = localize(artifact, pack(artifact, tmp_path / "cache"), tmp_path / "node")
    assert placed.path.read_bytes() == b"a recipe's own model"
    assert artifact.content_hash[:16] in placed.path.as_posix()


def test_a_folder_of_load_records_round_trips(tmp_path: Path) -> None:
    (tmp_path / "load" / "c1").mkdir(parents=True)
    (tmp_path / "load" / "c1" / "requests.csv").write_text("1,2\n")
    unpack_folder(pack_folder(tmp_path / "load"), tmp_path / "run" / "load" / "v")
    assert (tmp_path / "run" / "load" / "v" / "c1" / "requests.csv").read_text() == "1,2\n"
