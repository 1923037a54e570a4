"""One error root, and a command line that answers bad input with one line and exit 2, never a traceback."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import serving_harness.errors as errors
from serving_harness.__main__ import main
from serving_harness.bundle import BundleError
from serving_harness.runtimes import RuntimeUnavailable


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serving_harness", "serve", *args], capture_output=True, text=True, timeout=60
    )


def test_every_harness_error_has_one_root_and_keeps_its_builtin_base() -> None:
    classes = [getattr(errors, name) for name in errors.__all__ if isinstance(getattr(errors, name), type)]

    assert all(issubclass(cls, errors.HarnessError) for cls in classes)
    assert BundleError is errors.BundleError and issubclass(BundleError, ValueError)  # the gate catches ValueError
    assert RuntimeUnavailable is errors.RuntimeUnavailable and issubclass(RuntimeUnavailable, RuntimeError)
    assert (errors.BadInput.exit_code, BundleError.exit_code, errors.HarnessError.exit_code) == (2, 2, 1)


def test_a_port_out_of_range_is_one_argparse_line_and_exit_2() -> None:
    done = _serve("--model", "model.onnx", "--port", "99999")

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith("error: argument --port: expected 0..65535, got 99999")


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--port", "-1", "expected 0..65535"),
        ("--workers", "0", "expected at least 1"),
        ("--instances", "0", "greater than or equal to 1"),
        ("--threads", "-1", "greater than or equal to 0"),
        ("--max-batch-size", "0", "greater than or equal to 1"),
        ("--max-queue-delay-us", "-5", "greater than or equal to 0"),
        ("--max-queue-size", "0", "greater than or equal to 1"),
        ("--request-timeout-s", "nan", "greater than 0"),
        ("--max-body-bytes", "10", "greater than or equal to 1024"),
        ("--rate-limit-rps", "-1", "greater than 0"),
        ("--cache-size", "-1", "greater than or equal to 0"),
        ("--preferred-batch-sizes", "0,8", "at least 1"),
        ("--weight", "1.5", "a share of traffic in [0, 1]"),
        ("--threads", "two", "valid integer"),
    ],
)
def test_an_invalid_numeric_flag_is_an_argparse_error(
    flag: str, value: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--model", "model.onnx", flag, value])

    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exited.value.code == 2
    assert f"argument {flag}: " in last_line
    assert expected in last_line


def test_a_port_in_use_is_one_line_and_exit_2(models_dir: Path) -> None:
    with contextlib.closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve("--model", str(models_dir / "double.onnx"), "--port", str(port))

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"serving_harness: cannot listen on 127.0.0.1:{port}: " in done.stderr


@pytest.mark.parametrize(
    ("settings_json", "expected"),
    [
        (
            '{"instances": 0}',
            "serving_harness: serving settings: instances: Input should be greater than or equal to 1",
        ),
        ('{"instances": ', "serving_harness: --settings-json: "),
        ("/no/such/settings.json", "serving_harness: --settings-json: "),
        ('{"batching": {"max_batch_size": 4, "preferred_batch_sizes": [8]}}', "must lie in 1..max_batch_size=4"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(
    models_dir: Path, settings_json: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--model", str(models_dir / "double.onnx"), "--settings-json", settings_json])

    lines = capsys.readouterr().err.splitlines()
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith("serving_harness: ")
    assert expected in lines[0]


def test_a_bad_serving_json_in_a_bundle_is_a_bundle_error(tmp_path: Path) -> None:
    from serving_harness.bundle import _settings

    (tmp_path / "serving.json").write_text('{"instances": 0}')

    with pytest.raises(BundleError, match=r"serving.json: instances: Input should be greater than or equal to 1"):
        _settings(tmp_path, "serving.json")
