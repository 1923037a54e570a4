"""The workbench's errors. The CLI is the one place that turns them into a message and an exit code.

WorkbenchError                     exit 1
├── UsageError                     exit 2: the input is wrong; the message says how
│   ├── RecipeError                a recipe file: file, key path, what was expected
│   ├── NotFoundError              a run, report, variant or file that is not there
│   └── CorruptRunError            a run's file is there but unreadable (bad JSON, cut short, not UTF-8)
├── MissingDependencyError         an extra or a GPU the work needs; says what to install
├── BuildError                     a build step failed (the sweep records it and goes on)
├── MeasurementError               a measurement could not be taken (server died, bad outputs)
└── NoFeasibleVariant              no measured variant meets every constraint (select, export --variant best)

A programming error (``is_programming_error``: a TypeError, AttributeError, NameError or AssertionError
raised in our code or the user's own — a metric, a factory) is never caught as a failed variant: it stops the run with its traceback. An
exception raised inside a third-party library (onnxruntime's quantizer, torch's tracer: whatever their type)
is that library failing on this model: it fails the variant it happened in, and the sweep goes on.
"""

from __future__ import annotations

import sysconfig
import traceback
from pathlib import Path


class WorkbenchError(Exception):
    """Base of every error the workbench raises on purpose."""

    exit_code = 1


class UsageError(WorkbenchError):
    """The user's input is wrong."""

    exit_code = 2


class RecipeError(UsageError):
    """A recipe is malformed. Formats as ``file: key.path: what was expected``."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        self.detail = message
        location = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{location}: {message}" if location else message)


class NotFoundError(UsageError):
    """Something the user named is not there."""


class CorruptRunError(UsageError):
    """A run's file is there but cannot be read. Formats as ``file: unreadable: problem``."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: unreadable: {problem}")


class MissingDependencyError(WorkbenchError):
    """An optional dependency or a GPU is missing."""


class BuildError(WorkbenchError):
    """A build step failed."""


class MeasurementError(WorkbenchError):
    """A measurement could not be taken."""


class NoFeasibleVariant(WorkbenchError):
    """No measured variant meets every constraint; the message names the binding one and the nearest miss."""


# Bugs, not bad luck: a sweep stops on these, when our own code raised them, instead of recording a failed variant.
PROGRAMMING_ERRORS: tuple[type[Exception], ...] = (AssertionError, AttributeError, NameError, TypeError)
_OUR_PACKAGES = (Path(__file__).resolve().parent, Path(__file__).resolve().parent.parent / "serving_harness")


def is_programming_error(exc: BaseException) -> bool:
    """A ``PROGRAMMING_ERRORS`` type raised by code someone here wrote: ours (workbench, serving_harness) or the
    user's (a metric, a factory, a loader beside the recipe).

    The same TypeError from deep inside an installed library (torch, onnxruntime: site-packages or the
    standard library) is that library refusing this model — a failed variant, not a bug; the traceback's
    last frame tells which."""
    if not isinstance(exc, PROGRAMMING_ERRORS):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return True
    raised_in = Path(frames[-1].filename).resolve()
    if any(raised_in.is_relative_to(package) for package in _OUR_PACKAGES):
        return True
    return not any(raised_in.is_relative_to(root) for root in _library_roots())


def _library_roots() -> list[Path]:
    """Where installed libraries and the standard library live (site-packages, the stdlib folder)."""
    paths = sysconfig.get_paths()
    return [Path(paths[key]).resolve() for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths]
