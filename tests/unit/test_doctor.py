"""The doctor on this real machine: required checks pass, missing GPU support is reported but optional."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from workbench.doctor import Check, doctor_table, required_ok, run_checks


@pytest.fixture
def checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Check]:
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(tmp_path / "cache"))
    return run_checks()


def _by_name(checks: list[Check], name: str) -> Check:
    return next(check for check in checks if check.name == name)


def test_required_checks_pass_on_this_machine(checks: list[Check]) -> None:
    failed = [check for check in checks if check.required and not check.ok]
    assert failed == []
    assert required_ok(checks)
    assert {"python", "core packages", "uvloop + httptools", "locust", "cache dir", "disk space"} <= {
        check.name for check in checks if check.required
    }


def test_check_names_are_unique_and_failures_have_hints(checks: list[Check]) -> None:
    assert len({check.name for check in checks}) == len(checks)
    assert all(check.hint for check in checks if not check.ok)


def test_gpu_checks_are_optional_and_say_what_to_install(checks: list[Check]) -> None:
    import torch

    cuda = _by_name(checks, "gpu: CUDA")
    assert not cuda.required
    assert cuda.ok == torch.cuda.is_available()
    if not cuda.ok:
        assert "no CUDA device" in cuda.detail
        assert cuda.hint is not None and ".[gpu]" in cuda.hint
    assert not _by_name(checks, "gpu: onnxruntime CUDA/TensorRT").required


def test_cpu_isa_summary_names_the_reduced_precisions(checks: list[Check]) -> None:
    isa = _by_name(checks, "cpu isa")
    assert not isa.required
    for label in ("int8 VNNI:", "bf16:", "fp16:"):
        assert label in isa.detail


def test_cache_dir_that_cannot_be_created_fails_a_required_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(blocker / "cache"))

    checks = run_checks()

    cache = _by_name(checks, "cache dir")
    assert not cache.ok
    assert cache.required
    assert not required_ok(checks)
    assert str(blocker) in cache.detail


def test_required_ok_ignores_optional_failures() -> None:
    optional = Check("gpu: CUDA", ok=False, detail="none", hint="use a GPU machine", required=False)
    required = Check("python", ok=False, detail="3.9", hint="use Python >= 3.11")
    assert required_ok([Check("python", ok=True, detail="3.11"), optional])
    assert not required_ok([required, optional])


def test_doctor_table_shows_every_check_and_literal_hints(checks: list[Check]) -> None:
    console = Console(record=True, width=300)
    console.print(doctor_table(checks))
    text = console.export_text()
    for check in checks:
        assert check.name in text
    assert "pip install -e '.[notebooks]'" in text or _by_name(checks, "extra: notebooks").ok
