"""One registry type for every plugin family (steps, model sources, metrics).

Plugins register with a decorator, or from other distributions through the entry point group
``workbench.<family>``. Unknown names raise an error that lists what is available.

``import_callable`` resolves the ``pkg.module:function`` references a recipe names (a model factory, a data
loader, a metric, a fine-tune function). While a recipe runs (``recipe_imports``), the recipe's folder is on
the import path, so a module beside the recipe imports without ``PYTHONPATH``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Generic, TypeVar

from workbench.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names → plugins of one family."""

    def __init__(self, family: str, *, builtins: str | None = None) -> None:
        """``builtins`` names the package whose import registers the built-in plugins."""
        self.family = family
        self._builtins = builtins
        self._items: dict[str, T] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise ValueError(f"{self.family} {name!r} is registered twice")
            self._items[name] = item
            return item

        return decorate

    def get(self, name: str) -> T:
        self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            raise UsageError(f"unknown {self.family} {name!r}; available: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        if self._builtins:
            importlib.import_module(self._builtins)
        for ep in entry_points(group=f"workbench.{self.family}"):
            self._items.setdefault(ep.name, ep.load())


def import_callable(reference: str) -> Any:
    """Import ``pkg.module:attr``; a reference that does not resolve is a UsageError naming it and why."""
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise UsageError(f"expected 'pkg.module:function', got {reference!r}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"cannot import {reference!r}: {exc}") from exc


@contextmanager
def recipe_imports(folder: Path | None) -> Iterator[None]:
    """While the block runs, modules in ``folder`` (the recipe's) import by name, here and in child processes.

    The folder goes after the installed packages on ``sys.path`` (a file beside the recipe never shadows a
    library) and onto ``PYTHONPATH`` for the children a run starts (the served harness imports a torch
    factory too). Both are restored afterwards; None changes nothing.
    """
    if folder is None:
        yield
        return
    entry = str(Path(folder).resolve())
    added = entry not in sys.path
    if added:
        sys.path.append(entry)
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (previous, entry) if p)
    importlib.invalidate_caches()  # a module written beside the recipe after start-up is found too
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous
