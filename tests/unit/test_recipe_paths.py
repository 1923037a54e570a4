"""A recipe's file paths are read from the recipe's own folder (as ``extends`` and ``load.profile`` are), so a
recipe runs the same from any working folder, and the run records the absolute path it used."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from workbench.recipe.loader import load_recipe

RECIPE = """\
name: paths
model: {source: onnx, path: models/m.onnx}
data: {source: npz, path: data/d.npz, tokenizer: {path: tok}}
search: {pipelines: {ort: []}}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """recipes/r.yaml with its model, data and tokenizer folder beside it."""
    folder = tmp_path / "project" / "recipes"
    for name in ("models/m.onnx", "data/d.npz"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    (folder / "tok").mkdir()
    (folder / "r.yaml").write_text(RECIPE)
    return folder


@pytest.mark.parametrize("working", [".", "..", "/"], ids=["beside", "above", "root"])
def test_paths_are_read_from_the_recipes_folder_whatever_the_working_folder(
    project: Path, working: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project / working)
    recipe = load_recipe(project / "r.yaml")

    assert recipe.model.path == str(project / "models" / "m.onnx")
    assert recipe.data.path == str(project / "data" / "d.npz")
    assert recipe.data.tokenizer.path == str(project / "tok")


def test_a_base_recipes_paths_are_read_from_its_own_folder(project: Path, tmp_path: Path) -> None:
    child = tmp_path / "elsewhere" / "child.yaml"
    child.parent.mkdir()
    child.write_text(f"extends: {project / 'r.yaml'}\nname: child\n")

    recipe = load_recipe(child)

    assert recipe.model.path == str(project / "models" / "m.onnx")


def test_a_path_found_only_from_the_working_folder_still_works_with_a_warning(
    project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (project / "r.yaml").write_text(RECIPE.replace("models/m.onnx", "recipes/models/m.onnx"))
    monkeypatch.chdir(project.parent)

    with caplog.at_level(logging.WARNING):
        recipe = load_recipe(project / "r.yaml")

    assert recipe.model.path == str(project / "models" / "m.onnx")
    assert "read from the working folder" in caplog.text and "write 'models/m.onnx'" in caplog.text


def test_a_missing_file_is_named_from_the_recipes_folder(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "r.yaml").write_text(RECIPE.replace("models/m.onnx", "models/gone.onnx"))
    monkeypatch.chdir("/")

    assert load_recipe(project / "r.yaml").model.path == str(project / "models" / "gone.onnx")


def test_set_values_and_absolute_paths_are_left_as_given(project: Path, tmp_path: Path) -> None:
    absolute = tmp_path / "abs.onnx"
    (project / "r.yaml").write_text(RECIPE.replace("models/m.onnx", str(absolute)))

    recipe = load_recipe(project / "r.yaml", ["data.path=typed/here.npz"])

    assert recipe.model.path == str(absolute)
    assert recipe.data.path == "typed/here.npz"  # a --set value is typed from the working folder
