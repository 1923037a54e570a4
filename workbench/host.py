"""The host's environment fingerprint every report records, and what differs between two fingerprints.

``environment()`` answers "what was this measured on?": Python, OS, CPU model, cores and the ISA flags
inference kernels dispatch on, memory, GPUs, library versions, git commit, and thread settings. It is plain
JSON data; the report envelope adds the timestamp. ``environment_differences()`` lists what differs between two
fingerprints in ways that make measurements hard to compare, for ``compare`` and ``gate`` to warn about.

Nothing here imports torch only to look: versions come from package metadata, and torch's thread count is read
only when torch is already imported.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "INFERENCE_ISA_FLAGS",
    "LIBRARIES",
    "THREAD_ENV_VARS",
    "cpu_flags",
    "environment",
    "environment_differences",
    "git_info",
    "has_isa",
    "library_versions",
]

logger = logging.getLogger(__name__)

# The flags inference kernels dispatch on (oneDNN, MLAS, FBGEMM, XNNPACK), as /proc/cpuinfo spells them.
INFERENCE_ISA_FLAGS = frozenset(
    {
        "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
        "avx512_fp16", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile",
        "neon", "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2",
    }
)  # fmt: skip

# Distribution names whose versions a report records (None when not installed).
LIBRARIES = (
    "numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "transformers", "optimum", "optimum-onnx",
    "locust", "starlette", "uvicorn", "uvloop", "httptools", "orjson", "pydantic", "pandas", "pyarrow",
    "scikit-learn", "workbench", "serving_harness",
)  # fmt: skip

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE")

GIT_TIMEOUT_S = 5.0
NVIDIA_SMI_TIMEOUT_S = 10.0
_MB = 1024 * 1024
_GB = 1024 * _MB


# --------------------------------------------------------------------------------------------------- the fingerprint


def environment(*, repo: Path | None = None) -> dict[str, Any]:
    """The machine, software and source state of this measurement, as JSON-serialisable data.

    ``repo`` is where to read git state from (default: the current directory); ``git`` is None outside a repo.
    """
    return {
        "python": _python_info(),
        "platform": _platform_info(),
        "cpu": _cpu_info(),
        "memory_total_gb": round(psutil.virtual_memory().total / _GB, 2),
        "gpus": _gpus(),
        "libraries": library_versions(),
        "onnxruntime_providers": _onnxruntime_providers(),
        "git": git_info(repo if repo is not None else Path.cwd()),
        "threads": _thread_settings(),
    }


def _python_info() -> dict[str, Any]:
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        # the name only ("python3.11"): the absolute path is this machine's virtual environment, meaningless elsewhere
        "executable": Path(sys.executable).name,
        "virtualenv": sys.prefix != sys.base_prefix,
    }


def _platform_info() -> dict[str, Any]:
    return {
        "system": platform.system(),
        "release": platform.release(),  # the kernel on Linux
        "machine": platform.machine(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
    }


def _cpu_info() -> dict[str, Any]:
    return {
        "model": _cpu_model(),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_usable": _usable_cores(),
        "frequency_mhz": _cpu_frequency_mhz(),
        "isa": sorted(cpu_flags() & INFERENCE_ISA_FLAGS),
    }


@functools.cache
def _proc_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _cpuinfo_field(*names: str) -> str | None:
    """The first value of the first of ``names`` found in /proc/cpuinfo."""
    for name in names:
        match = re.search(rf"^{re.escape(name)}\s*:\s*(.*)$", _proc_cpuinfo(), flags=re.MULTILINE)
        if match and match.group(1).strip():
            return match.group(1).strip()
    return None


def _cpu_model() -> str:
    return _cpuinfo_field("model name", "Model", "Hardware") or platform.processor() or platform.machine()


def _usable_cores() -> int | None:
    """Cores this process may run on (affinity, e.g. a container's cpuset); None where the OS cannot say."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _cpu_frequency_mhz() -> dict[str, float | None] | None:
    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError, AttributeError):
        return None
    if freq is None:
        return None
    return {"current": round(freq.current, 1) or None, "max": round(freq.max, 1) or None}  # VMs often say 0


@functools.cache
def cpu_flags() -> frozenset[str]:
    """Every ISA flag this CPU reports (x86 ``flags``, Arm ``Features``); empty where unknown."""
    flags = _cpuinfo_field("flags", "Features")
    found = set(flags.split()) if flags else set()
    if platform.machine().lower() in {"arm64", "aarch64"}:
        found |= {"neon", "asimd"}  # mandatory on AArch64; macOS has no /proc/cpuinfo to say so
    return frozenset(found)


def has_isa(name: str) -> bool:
    """Whether the CPU has ISA extension ``name``, spelled as /proc/cpuinfo does (``avx512_bf16``, ``amx_int8``)."""
    return name.lower() in cpu_flags()


def _gpus() -> list[dict[str, Any]]:
    """CUDA devices, from nvidia-smi when present, else from torch.cuda where a GPU is plausible."""
    smi = _nvidia_smi_gpus()
    if smi is not None:
        return smi
    return _torch_gpus()


def _nvidia_smi_gpus() -> list[dict[str, Any]] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    query = "--query-gpu=name,memory.total,driver_version"
    try:
        out = subprocess.run(
            [exe, query, "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        logger.debug("nvidia-smi failed", exc_info=True)
        return None
    return [_smi_row(line) for line in out.splitlines() if line.strip()]


def _smi_row(line: str) -> dict[str, Any]:
    name, memory_mb, driver = (part.strip() for part in line.split(",", 2))
    return {"name": name, "memory_mb": int(float(memory_mb)), "driver": driver}


def _torch_gpus() -> list[dict[str, Any]]:
    # Importing torch costs seconds, so only when it is loaded already or an NVIDIA device node exists.
    if "torch" not in sys.modules and not Path("/dev/nvidiactl").exists():
        return []
    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    return [_torch_gpu(torch.cuda.get_device_properties(i)) for i in range(torch.cuda.device_count())]


def _torch_gpu(props: Any) -> dict[str, Any]:
    return {
        "name": str(props.name),
        "memory_mb": int(props.total_memory // _MB),
        "capability": f"{props.major}.{props.minor}",
    }


def library_versions() -> dict[str, str | None]:
    """Installed versions of ``LIBRARIES``, from package metadata (nothing is imported)."""
    return {name: _version(name) for name in LIBRARIES}


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return _module_version(distribution)


def _module_version(module: str) -> str | None:
    """``__version__`` read from a package's ``__init__.py`` without importing it (serving_harness ships in ours)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    text = Path(spec.origin).read_text(encoding="utf-8", errors="replace")
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, flags=re.MULTILINE)
    return match.group(1) if match else None


def _onnxruntime_providers() -> list[str] | None:
    """onnxruntime's available execution providers (its import is cheap); None when it is not installed."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def _thread_settings() -> dict[str, Any]:
    settings: dict[str, Any] = {name: os.environ.get(name) for name in THREAD_ENV_VARS}
    settings["torch_num_threads"] = None
    settings["torch_num_interop_threads"] = None
    torch = sys.modules.get("torch")  # never import torch just to ask
    if torch is not None and hasattr(torch, "get_num_threads"):
        settings["torch_num_threads"] = torch.get_num_threads()
        settings["torch_num_interop_threads"] = torch.get_num_interop_threads()
    # onnxruntime's defaults when SessionOptions leave them at 0: one intra-op thread per physical core,
    # and sequential execution (inter-op threads unused).
    settings["ort_intra_op_threads_default"] = psutil.cpu_count(logical=False)
    settings["ort_execution_mode_default"] = "sequential"
    return settings


# --------------------------------------------------------------------------------------------------------------- git


def git_info(repo: Path) -> dict[str, Any] | None:
    """Commit, branch (None when detached) and dirty flag (tracked files changed) of ``repo``; None outside git."""
    if _git(repo, "rev-parse", "--show-toplevel") is None:
        return None
    branch = _git(repo, "rev-parse", "--abbrev-ref", "HEAD")
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git(repo, "rev-parse", "HEAD"),
        "branch": None if branch in (None, "HEAD") else branch,
        "dirty": None if status is None else bool(status),
    }


def _git(repo: Path, *args: str) -> str | None:
    """A git command's stripped stdout, or None when git is missing, fails or hangs."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # `git status` must not take the index lock of a busy repo
    try:
        result = subprocess.run(
            ["git", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


# ------------------------------------------------------------------------------------------------------- differences

# (label, path into the fingerprint) for scalar values that matter when comparing measurements.
_COMPARED = (
    ("cpu model", ("cpu", "model")),
    ("logical cores", ("cpu", "cores_logical")),
    ("physical cores", ("cpu", "cores_physical")),
    ("usable cores", ("cpu", "cores_usable")),
    ("python", ("python", "version")),
    ("onnxruntime providers", ("onnxruntime_providers",)),
    *((name, ("threads", name)) for name in (*THREAD_ENV_VARS, "torch_num_threads")),
)


def environment_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """What differs between fingerprints ``a`` and ``b`` that can move a measurement, one line each.

    Keys missing from either side (an older report) are compared as None.
    """
    lines = [_change(label, _get(a, path), _get(b, path)) for label, path in _COMPARED]
    lines.append(_isa_change(_get(a, ("cpu", "isa")), _get(b, ("cpu", "isa"))))
    lines.append(_change("gpus", _gpu_names(a), _gpu_names(b)))
    lines.extend(_library_changes(_get(a, ("libraries",)) or {}, _get(b, ("libraries",)) or {}))
    return [line for line in lines if line]


def _get(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = data
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _change(label: str, before: Any, after: Any) -> str:
    return "" if before == after else f"{label}: {_show(before)} → {_show(after)}"


def _show(value: Any) -> str:
    if value is None:
        return "absent"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _isa_change(before: Any, after: Any) -> str:
    old, new = set(before or ()), set(after or ())
    if old == new:
        return ""
    parts = [f"-{flag}" for flag in sorted(old - new)] + [f"+{flag}" for flag in sorted(new - old)]
    return f"cpu isa: {' '.join(parts)}"


def _gpu_names(data: Mapping[str, Any]) -> list[str]:
    return [str(gpu.get("name")) for gpu in _get(data, ("gpus",)) or () if isinstance(gpu, Mapping)]


def _library_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> Iterator[str]:
    for name in sorted(set(before) | set(after)):
        yield _change(f"{name} version", before.get(name), after.get(name))
