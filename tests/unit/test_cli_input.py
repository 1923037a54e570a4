"""Bad input at the command line is one located line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).parents[2] / "recipes" / "digits-cpu.yaml"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``workbench ARGS...`` in a real process."""
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=240
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert all(text in lines[0] for text in expected), lines[0]


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_directory_as_recipe(command: str, tmp_path: Path) -> None:
    folder = tmp_path / "recipes"
    folder.mkdir()
    assert_one_line_error(cli(command, str(folder), cwd=tmp_path), str(folder), "got a directory")


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_recipe_that_is_not_utf8(command: str, tmp_path: Path) -> None:
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes("name: café\n".encode("latin-1"))
    assert_one_line_error(cli(command, str(recipe), cwd=tmp_path), str(recipe), "expected UTF-8")


def test_batch_size_zero_is_refused_before_anything_runs(tmp_path: Path) -> None:
    result = cli("run", str(RECIPE), "--set", "measure.batch_sizes=[0]", "--reports", "out", cwd=tmp_path)

    assert_one_line_error(result, "measure.batch_sizes.0", "greater than or equal to 1")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("url", ["not-a-url", "ftp://127.0.0.1:8000", "http://", "http://127.0.0.1:99999"])
def test_load_refuses_what_is_not_an_http_url(url: str, tmp_path: Path) -> None:
    result = cli("load", url, "--model", "m", "--reports", "out", cwd=tmp_path)

    assert_one_line_error(result, "http:// or https://", repr(url))
    assert not (tmp_path / "out").exists()
