"""What ``workbench validate`` checks beyond the schema: the files a recipe names exist, and the code it names
imports (factories, loaders, metrics), with the recipe's folder on the import path as during a run.

Each problem is a RecipeError located by file and key (exit 2); no model is built and no data is read
beyond an ONNX file's graph (to refuse non-tensor outputs before a run starts).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from workbench.errors import RecipeError, UsageError
from workbench.recipe.loader import recipe_folder
from workbench.recipe.spec import Recipe
from workbench.registry import import_callable, recipe_imports

__all__ = ["check_recipe"]

T = TypeVar("T")

# Data sources that read the file at ``data.path``.
_DATA_FILE_SOURCES = frozenset({"npz", "text", "images"})


def check_recipe(recipe: Recipe, *, file: str) -> None:
    """Raise a located RecipeError for the first missing file or unimportable reference of ``recipe``."""
    with recipe_imports(recipe_folder(recipe)):
        for check in (_model_files, _model_code, _data_files, _data_code, _onnx_outputs):
            check(recipe, file)


def _exists(path: str | None, key: str, what: str, file: str, *, directory_ok: bool = False) -> None:
    if path is None:
        return
    found = Path(path).expanduser()
    if not (found.is_file() or (directory_ok and found.is_dir())):
        raise RecipeError(f"{what} {path!r} does not exist (paths are relative to {Path.cwd()})", file=file, key=key)


def _imports(reference: str | None, key: str, file: str) -> None:
    if reference is None:
        return
    try:
        function = import_callable(reference)
    except UsageError as exc:
        raise RecipeError(f"{exc} (modules beside the recipe import by name)", file=file, key=key) from None
    if not callable(function):
        raise RecipeError(f"{reference!r} is not callable", file=file, key=key)


def _model_files(recipe: Recipe, file: str) -> None:
    model = recipe.model
    _exists(model.path, "model.path", "model file", file, directory_ok=True)
    _exists(model.weights, "model.weights", "weights file", file)


def _model_code(recipe: Recipe, file: str) -> None:
    if recipe.model.source == "torch":
        _imports(recipe.model.factory, "model.factory", file)


def _data_files(recipe: Recipe, file: str) -> None:
    if recipe.data.source in _DATA_FILE_SOURCES:
        if recipe.data.path is None:
            raise RecipeError(f"source {recipe.data.source!r} needs a path", file=file, key="data.path")
        _exists(recipe.data.path, "data.path", "data file", file, directory_ok=recipe.data.source == "images")


def _data_code(recipe: Recipe, file: str) -> None:
    if recipe.data.source == "custom":
        _imports(recipe.data.loader, "data.loader", file)
    metric = recipe.data.metric
    name = metric if isinstance(metric, str) else metric.name
    key = "data.metric" if isinstance(metric, str) else "data.metric.name"
    if ":" in name:
        _imports(name, key, file)
        return
    from workbench.data import METRICS

    try:
        METRICS.get(name)
    except UsageError as exc:
        raise RecipeError(str(exc), file=file, key=key) from None


def _onnx_outputs(recipe: Recipe, file: str) -> None:
    """An ONNX model's inputs and outputs are tensors, and a metric's ``output`` is one of them."""
    if recipe.model.source != "onnx" or recipe.model.path is None:
        return
    import onnx

    from workbench.models.onnx_source import check_tensors, select_outputs

    try:
        graph = onnx.load(str(Path(recipe.model.path).expanduser()), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and others
        raise RecipeError(f"not a readable ONNX model: {exc}", file=file, key="model.path") from None
    selection = recipe.model.options.get("outputs")
    chosen = graph
    if selection is not None:
        chosen = _located(
            lambda: select_outputs(graph, selection, "model.options.outputs"), file, "model.options.outputs"
        )
    _located(lambda: check_tensors(chosen, "model.path"), file, "model.path")
    metric = recipe.data.metric
    names = [o.name for o in chosen.graph.output]
    if not isinstance(metric, str) and metric.output is not None and metric.output not in names:
        raise RecipeError(
            f"the model has no output {metric.output!r} ({', '.join(names)})", file=file, key="data.metric.output"
        )


def _located(check: Callable[[], T], file: str, key: str) -> T:
    """``check()``, its UsageError located at ``key``."""
    try:
        return check()
    except UsageError as exc:
        raise RecipeError(str(exc).removeprefix(f"{key}: "), file=file, key=key) from None
