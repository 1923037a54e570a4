"""Recipe files → a frozen, validated Recipe.

``extends: other.yaml`` merges another recipe underneath (paths relative to the file; mappings merge
deeply, everything else is replaced); ``model.path``, ``data.path`` and ``data.tokenizer.path`` are
read from the recipe's folder too, and recorded absolute. ``--set dotted.key=value`` overrides after that, with the value
read as YAML (``--set measure.trials=3``, ``--set 'measure.batch_sizes=[1, 8]'``). Errors name the file,
the key path and what was expected.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from workbench.errors import RecipeError, UsageError
from workbench.recipe.files import read_yaml_mapping
from workbench.recipe.spec import Recipe

MAX_EXTENDS_DEPTH = 8
# The recipe keys that name a file or folder: relative values are read from the recipe's folder.
PATH_KEYS = (("model", "path"), ("data", "path"), ("data", "tokenizer", "path"))
logger = logging.getLogger(__name__)


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    """Read, merge, override and validate a recipe."""
    path = Path(path)
    raw = _read_with_extends(path, chain=())
    for override in overrides:
        _apply_override(raw, override, file=str(path))
    _inline_profile(raw, path)
    recipe = validate_recipe(raw, file=str(path))
    recipe._folder = path.resolve().parent  # modules beside the recipe import from here (not hashed)
    return recipe


def recipe_folder(recipe: Recipe) -> Path | None:
    """The folder of the file ``recipe`` was read from (None for a recipe built in code or read from a run)."""
    return recipe._folder


def _inline_profile(raw: dict[str, Any], path: Path) -> None:
    """Replace ``load.profile: NAME`` by the profile's content, so the run records (and hashes) the
    exact profile it ran. Names are looked up beside the recipe, in its ``profiles/`` folder, then
    in the working folder and ``recipes/profiles/``."""
    from workbench.recipe.profiles import load_profile

    load = raw.get("load")
    if not isinstance(load, dict) or not isinstance(load.get("profile"), str | dict):
        return
    try:
        profile = load_profile(load["profile"], base_dir=path.parent)
    except RecipeError as exc:
        raise RecipeError(
            exc.detail, file=exc.file or str(path), key=f"load.profile.{exc.key}" if exc.key else "load.profile"
        ) from None
    except UsageError as exc:
        raise RecipeError(str(exc), file=str(path), key="load.profile") from None
    load["profile"] = profile.model_dump(mode="json")


def validate_recipe(raw: Mapping[str, Any], *, file: str = "<recipe>") -> Recipe:
    """Validate a recipe mapping; the first problem becomes a located RecipeError."""
    try:
        return Recipe.model_validate(dict(raw))
    except ValidationError as exc:
        raise _located(exc, file) from None


def spec_hash(recipe: Recipe) -> str:
    """A stable 12-hex-digit hash of the resolved recipe (key order and formatting do not matter)."""
    canonical = orjson.dumps(recipe.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:12]


def recipe_json_schema() -> dict[str, Any]:
    return Recipe.model_json_schema()


def _read_yaml(path: Path) -> dict[str, Any]:
    return read_yaml_mapping(path, "a mapping of recipe keys (name, model, search…)")


def _read_with_extends(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " → ".join(p.name for p in (*chain, resolved))
        raise RecipeError(f"extends forms a cycle: {cycle}", file=str(path), key="extends")
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise RecipeError(f"extends is nested deeper than {MAX_EXTENDS_DEPTH}", file=str(path), key="extends")
    data = _read_yaml(path)
    _anchor_paths(data, path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise RecipeError("expected a file path", file=str(path), key="extends")
    base = _read_with_extends(path.parent / parent, (*chain, resolved))
    return _deep_merge(base, data)


def _anchor_paths(data: dict[str, Any], path: Path) -> None:
    """Make the file paths a recipe names (``PATH_KEYS``) absolute, read from the recipe's own folder, as
    ``extends`` and ``load.profile`` are: a recipe then runs the same from any working folder, and the run
    records where its files were. A path that exists only from the working folder (how recipes were read
    before) is still found there, with a warning; one that exists nowhere is named from the recipe's folder
    in the error that follows. ``--set`` values are the user's own, typed from the working folder: untouched.
    """
    folder = path.resolve().parent
    for keys in PATH_KEYS:
        holder: Any = data
        for key in keys[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        value = holder.get(keys[-1]) if isinstance(holder, dict) else None
        if not isinstance(value, str) or not value.strip() or Path(value).expanduser().is_absolute():
            continue
        beside, here = folder / value, Path(value)
        if not beside.exists() and here.exists():
            logger.warning(
                "%s: %s %r is read from the working folder; recipe paths are relative to the recipe's folder "
                "(%s): write %r",
                path, ".".join(keys), value, folder, os.path.relpath(here.resolve(), folder),
            )  # fmt: skip
            beside = here
        holder[keys[-1]] = str(beside.resolve())


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _apply_override(raw: dict[str, Any], override: str, *, file: str) -> None:
    dotted, sep, text = override.partition("=")
    if not sep or not dotted.strip():
        raise RecipeError(f"--set expects dotted.key=value, got {override!r}", file=file)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise RecipeError(f"--set value is not valid YAML: {text!r}", file=file, key=dotted) from None
    keys = dotted.strip().split(".")
    node = raw
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise RecipeError(f"cannot set inside a {type(child).__name__}", file=file, key=dotted)
        node = child
    node[keys[-1]] = value


def _located(exc: ValidationError, file: str) -> RecipeError:
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or None
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key (check its spelling; `workbench report schema` lists the keys)"
    elif first["type"] == "missing":
        message = "required key is missing"
    extra = len(exc.errors()) - 1
    suffix = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra else ""
    return RecipeError(message + suffix, file=file, key=key)
