"""Which exceptions stop a run: bugs in our code do; a library failing on a model does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.errors import BuildError, is_programming_error
from workbench.metrics import higher_is_better


def _raised(call: object) -> BaseException:
    with pytest.raises(Exception) as info:
        call()  # type: ignore[operator]
    return info.value


def test_a_type_error_in_our_code_is_a_programming_error() -> None:
    error = _raised(lambda: higher_is_better(None))  # type: ignore[arg-type]
    assert isinstance(error, AttributeError)
    assert is_programming_error(error)


def test_the_same_type_error_from_inside_a_library_is_not() -> None:
    error = _raised(lambda: json.loads(1))  # type: ignore[arg-type]
    assert isinstance(error, TypeError)
    assert not is_programming_error(error)


def test_errors_we_raise_on_purpose_are_not_programming_errors() -> None:
    assert not is_programming_error(BuildError("quantize.ort_dynamic: no MatMul to quantize"))
    assert not is_programming_error(RuntimeError("onnxruntime: invalid graph"))


def test_a_bug_in_the_users_own_module_is_a_programming_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "users_metric.py").write_text("def metric(outputs, labels):\n    return len(None)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import users_metric  # type: ignore[import-not-found]

    error = _raised(lambda: users_metric.metric(None, None))
    assert isinstance(error, TypeError)
    assert is_programming_error(error)
