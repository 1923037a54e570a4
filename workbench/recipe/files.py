"""Reading the YAML files a recipe names (the recipe itself, its ``extends``, load profiles): every way a file
can fail to be a YAML mapping is a located ``RecipeError``, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from workbench.errors import RecipeError

__all__ = ["read_text", "read_yaml_mapping"]


def read_text(path: Path) -> str:
    """The file as UTF-8 text (a byte-order mark is dropped); every way of not being one is a RecipeError."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise RecipeError("no such file", file=str(path)) from None
    except IsADirectoryError:
        raise RecipeError("expected a YAML file, got a directory", file=str(path)) from None
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        message = f"expected UTF-8 text, found byte 0x{byte:02x} at offset {exc.start} (is it a binary file?)"
        raise RecipeError(message, file=str(path)) from None
    except OSError as exc:
        raise RecipeError(f"cannot read the file ({exc.strerror or exc})", file=str(path)) from None


def read_yaml_mapping(path: Path, expected: str) -> dict[str, Any]:
    """The YAML file at ``path`` as a mapping; ``expected`` says what its keys should be, for the messages."""
    try:
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise RecipeError(f"{where}not valid YAML ({getattr(exc, 'problem', exc)})", file=str(path)) from None
    if data is None:
        raise RecipeError(f"the file is empty; expected {expected}", file=str(path))
    if not isinstance(data, dict):
        raise RecipeError(f"expected a mapping at the top level, got {type(data).__name__}", file=str(path))
    return data
