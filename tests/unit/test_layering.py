"""The import layering of ARCHITECTURE.md, read from the source with ``ast`` (nothing is imported, so a lazy import
inside a function or under ``TYPE_CHECKING`` counts too: it is still a dependency of that module)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ("workbench/stats.py", "workbench/metrics.py", "workbench/host.py", "workbench/errors.py")


@dataclass(frozen=True)
class Rule:
    """Modules under ``sources`` (files or folders, relative to the repository) import nothing under ``forbidden``
    (dotted module prefixes), except what is under ``allowed``."""

    name: str
    sources: tuple[str, ...]
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = ()


def _under(package: str, *names: str) -> tuple[str, ...]:
    return tuple(f"{package}.{name}" for name in names)


RULES = [
    Rule("the serving harness ships alone", ("serving_harness",), ("workbench",)),
    Rule("measure never reports or decides", ("workbench/measure",), _under("workbench", "report", "decide", "gate", "sweep", "bundle")),
    Rule("steps only build", ("workbench/steps",), _under("workbench", "measure", "report", "sweep", "decide", "gate")),
    Rule("recipes are data", ("workbench/recipe",), _under("workbench", "measure", "report", "sweep")),
    Rule("reports never run sweeps", ("workbench/report",), _under("workbench", "sweep", "gate", "bundle")),
    Rule("the core modules stand alone", CORE, ("workbench",), allowed=("workbench.errors",)),
]  # fmt: skip


def module_name(path: Path) -> str:
    """``workbench/measure/usage.py`` → ``workbench.measure.usage``; a package's ``__init__`` is the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in the file. ``from a import b`` yields ``a.b``, since ``b`` may be a
    module; relative imports are resolved against the file's package."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found += [(node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base) for alias in node.names]
    return sorted(found)


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _files(sources: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for source in sources:
        path = ROOT / source
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def violations(rule: Rule) -> list[str]:
    """``path:line imports name`` for each import that breaks the rule."""
    found = []
    for path in _files(rule.sources):
        for line, name in imported_modules(path):
            if _matches(name, rule.forbidden) and not _matches(name, rule.allowed):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return found


@pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
def test_layering(rule: Rule) -> None:
    assert _files(rule.sources), f"{rule.sources} holds no Python file: the rule would pass vacuously"
    assert violations(rule) == []


# --------------------------------------------------------------------------------------------- the checker itself


def test_module_names_follow_the_folders() -> None:
    assert module_name(ROOT / "workbench" / "measure" / "usage.py") == "workbench.measure.usage"
    assert module_name(ROOT / "workbench" / "measure" / "load" / "__init__.py") == "workbench.measure.load"


def test_relative_lazy_and_type_checking_imports_are_seen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    module = tmp_path / "workbench" / "measure" / "probe.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "from ..report import render\n"
        "from . import usage\n"
        "if TYPE_CHECKING:\n"
        "    import workbench.gate.rules\n"
        "def later():\n"
        "    from workbench.sweep.runner import run\n"
    )
    names = [name for _, name in imported_modules(module)]
    assert names == [
        "typing.TYPE_CHECKING",
        "workbench.report.render",
        "workbench.measure.usage",
        "workbench.gate.rules",
        "workbench.sweep.runner.run",
    ]
    rule = Rule("probe", ("workbench/measure",), _under("workbench", "report", "gate", "sweep"))
    assert violations(rule) == [
        "workbench/measure/probe.py:2 imports workbench.report.render",
        "workbench/measure/probe.py:5 imports workbench.gate.rules",
        "workbench/measure/probe.py:7 imports workbench.sweep.runner.run",
    ]


def test_an_allowed_module_is_not_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    (tmp_path / "workbench").mkdir()
    (tmp_path / "workbench" / "stats.py").write_text(
        "from workbench.errors import UsageError\nfrom workbench import paths\n"
    )
    rule = Rule("core", ("workbench/stats.py",), ("workbench",), allowed=("workbench.errors",))
    assert violations(rule) == ["workbench/stats.py:2 imports workbench.paths"]
