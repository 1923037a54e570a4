"""The environment fingerprint, its differences and the ISA helpers, on this real machine."""

from __future__ import annotations

import copy
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

import serving_harness
import workbench
from workbench.host import (
    INFERENCE_ISA_FLAGS,
    LIBRARIES,
    THREAD_ENV_VARS,
    cpu_flags,
    environment,
    environment_differences,
    git_info,
    has_isa,
)


@pytest.fixture(scope="module")
def env() -> dict[str, Any]:
    return environment()


# --------------------------------------------------------------------------------------------------- fingerprint


def test_environment_has_the_sections_a_report_needs(env: dict[str, Any]) -> None:
    assert set(env) == {
        "python", "platform", "cpu", "memory_total_gb", "gpus", "libraries", "onnxruntime_providers", "git", "threads",
    }  # fmt: skip
    assert "timestamp" not in json.dumps(env)  # the report envelope carries the time


def test_environment_values_are_sane(env: dict[str, Any]) -> None:
    assert env["python"]["version"] == platform.python_version()
    assert env["platform"]["system"] == platform.system()
    cpu = env["cpu"]
    assert cpu["model"]
    assert cpu["cores_logical"] >= 1
    assert cpu["cores_physical"] is None or 1 <= cpu["cores_physical"] <= cpu["cores_logical"]
    assert cpu["isa"] == sorted(cpu["isa"])
    assert set(cpu["isa"]) <= INFERENCE_ISA_FLAGS
    assert env["memory_total_gb"] > 0
    assert isinstance(env["gpus"], list)
    assert "CPUExecutionProvider" in env["onnxruntime_providers"]


def test_library_versions_come_from_metadata(env: dict[str, Any]) -> None:
    import numpy

    libraries = env["libraries"]
    assert list(libraries) == list(LIBRARIES)
    assert libraries["numpy"] == numpy.__version__
    assert libraries["workbench"] == workbench.__version__
    assert libraries["serving_harness"] == serving_harness.__version__
    assert all(version is None or isinstance(version, str) for version in libraries.values())


def test_environment_is_json_serialisable(env: dict[str, Any]) -> None:
    assert json.loads(json.dumps(env)) == env
    assert orjson.loads(orjson.dumps(env)) == env


def test_environment_records_no_path_of_this_machine(env: dict[str, Any]) -> None:
    assert env["python"]["executable"] == Path(sys.executable).name  # "python3.11", not this venv's folder
    assert env["python"]["virtualenv"] == (sys.prefix != sys.base_prefix)
    text = json.dumps(env)
    for folder in {sys.prefix, sys.base_prefix, str(Path.cwd()), str(Path.home())} - {"/"}:
        assert folder not in text


def test_environment_does_not_import_torch() -> None:
    code = (
        "import sys; from workbench.host import environment; "
        "before = 'torch' in sys.modules; environment(); print(before, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    before, after = out.stdout.split()
    assert after == before  # whatever importing the package does, environment() itself adds no torch import


def test_thread_settings_read_env_vars_and_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    threads = environment()["threads"]
    assert set(THREAD_ENV_VARS) <= set(threads)
    assert threads["OMP_NUM_THREADS"] == "3"
    assert threads["torch_num_threads"] == torch.get_num_threads()
    assert threads["ort_intra_op_threads_default"] >= 1


# ----------------------------------------------------------------------------------------------------------- git


def _git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never find a repo above the temp dir
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q")
    _git(path, "checkout", "-q", "-b", "main")
    (path / "model.txt").write_text("v1\n")
    _git(path, "add", "model.txt")
    _git(path, "commit", "-q", "-m", "first")
    return path


def test_git_info_is_none_outside_a_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()
    assert git_info(plain) is None
    assert environment(repo=plain)["git"] is None


def test_git_info_of_a_clean_repo(repo: Path) -> None:
    info = git_info(repo)
    assert info == {"commit": _git(repo, "rev-parse", "HEAD"), "branch": "main", "dirty": False}
    assert len(info["commit"]) == 40


def test_git_dirty_flag_follows_tracked_files(repo: Path) -> None:
    (repo / "notes.txt").write_text("untracked\n")
    assert git_info(repo)["dirty"] is False  # type: ignore[index]  # untracked files do not count, as in pytest-benchmark
    (repo / "model.txt").write_text("v2\n")
    assert environment(repo=repo)["git"]["dirty"] is True


def test_git_branch_is_none_when_detached(repo: Path) -> None:
    _git(repo, "checkout", "-q", "--detach")
    assert git_info(repo)["branch"] is None  # type: ignore[index]


# --------------------------------------------------------------------------------------------------- differences


def test_identical_environments_have_no_differences(env: dict[str, Any]) -> None:
    assert environment_differences(env, copy.deepcopy(env)) == []


def test_differences_name_cpu_library_isa_threads_and_gpu(env: dict[str, Any]) -> None:
    other = copy.deepcopy(env)
    other["cpu"]["model"] = "Intel(R) Xeon(R) Platinum 8480+"
    gained = "sve2" if "sve2" not in env["cpu"]["isa"] else "avx512_fp16"  # a flag this host lacks
    other["cpu"]["isa"] = sorted({*env["cpu"]["isa"], gained} - {"avx2"})
    other["libraries"]["onnxruntime"] = "0.0.1"
    other["threads"]["OMP_NUM_THREADS"] = "1"
    other["gpus"] = [{"name": "NVIDIA H100", "memory_mb": 81559}]

    lines = environment_differences(env, other)

    assert f"cpu model: {env['cpu']['model']} → Intel(R) Xeon(R) Platinum 8480+" in lines
    assert f"onnxruntime version: {env['libraries']['onnxruntime']} → 0.0.1" in lines
    assert f"OMP_NUM_THREADS: {env['threads']['OMP_NUM_THREADS'] or 'absent'} → 1" in lines
    assert any(line.startswith("gpus: ") and line.endswith("→ [NVIDIA H100]") for line in lines)
    isa = next(line for line in lines if line.startswith("cpu isa"))
    assert f"+{gained}" in isa
    assert ("-avx2" in isa) == ("avx2" in env["cpu"]["isa"])
    assert len(lines) == 5


def test_differences_tolerate_an_older_report_without_sections(env: dict[str, Any]) -> None:
    lines = environment_differences({"cpu": {"model": env["cpu"]["model"]}}, env)
    assert lines  # everything else reads as "absent → value"
    assert not any(line.startswith("cpu model") for line in lines)


# ----------------------------------------------------------------------------------------------------------- isa


def test_cpu_flags_and_has_isa_agree() -> None:
    flags = cpu_flags()
    for flag in INFERENCE_ISA_FLAGS:
        assert has_isa(flag) == (flag in flags)
    assert not has_isa("no_such_extension")
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        assert has_isa("sse2")
        assert has_isa("SSE2")
