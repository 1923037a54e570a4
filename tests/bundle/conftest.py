"""A real digits run (made once per session) and bundles exported from it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from workbench.bundle.export import ExportedBundle, export_bundle
from workbench.report.rundir import RunDir

# The digits example, small: the baseline (torch, not shippable), an fp32 export and an int8 one.
RECIPE: dict[str, Any] = {
    "name": "digits-bundle",
    "model": {"source": "example", "name": "digits"},
    "data": {"source": "example", "metric": "accuracy"},
    "search": {
        "baseline": "torch-eager",
        "pipelines": {
            "torch-eager": [],
            "ort-fp32": ["export.onnx"],
            "ort-int8-matmul": [
                "export.onnx",
                {"quantize.ort_dynamic": {"per_channel": True, "op_types": ["MatMul", "Gemm"]}},
            ],
        },
        "serving": {"base": {"runtime": {"intra_op_threads": 1, "inter_op_threads": 1}}},
    },
    "measure": {"batch_sizes": [1, 8], "warmup_iters": 5, "trials": 2, "trial_duration_s": 0.1},
    "load": {"enabled": False},
    "constraints": {"accuracy_drop": {"max": 0.02}},
    "objective": {"maximize": "throughput_items_per_s", "batch_size": 8},
}


@pytest.fixture(scope="session")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundle-reports")


@pytest.fixture(scope="session")
def digits_run(reports: Path) -> RunDir:
    """A complete run of the digits recipe above (in-process measurement only: seconds, not minutes)."""
    from workbench.recipe.spec import Recipe
    from workbench.sweep.runner import run_recipe

    return run_recipe(Recipe.model_validate(RECIPE), reports=reports)


@pytest.fixture(scope="session")
def bundles_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bundles")


@pytest.fixture(scope="session")
def bundle(digits_run: RunDir, reports: Path, bundles_dir: Path) -> ExportedBundle:
    """digits 1.2.0: the int8 variant, with the fp32 export as its fallback (the baseline is torch)."""
    return export_bundle(digits_run.path, out=bundles_dir / "digits-1.2.0", variant="ort-int8-matmul", reports=reports)


@pytest.fixture(scope="session")
def bundle_fp32(digits_run: RunDir, reports: Path, bundles_dir: Path) -> ExportedBundle:
    """digits 1.3.0: the fp32 export, no fallback (the next version in the canary tests)."""
    return export_bundle(
        digits_run.path, out=bundles_dir / "digits-1.3.0", variant="ort-fp32", fallback="none", reports=reports
    )


@pytest.fixture
def bundle_copy(bundle: ExportedBundle, tmp_path: Path) -> Path:
    """A private copy of the 1.2.0 bundle that a test may tamper with."""
    return Path(shutil.copytree(bundle.path, tmp_path / bundle.path.name))


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh Ed25519 private key (``workbench keygen``); its public key is beside it as ``.pub``."""
    from workbench.bundle.sign import generate_key_pair

    return generate_key_pair(tmp_path_factory.mktemp("keys") / "bundle-key").private


@pytest.fixture(scope="session")
def signed_bundle(digits_run: RunDir, reports: Path, bundles_dir: Path, signing_key: Path) -> ExportedBundle:
    """digits 2.0.0: the fp32 export, no fallback, signed with ``signing_key`` (``export --sign``)."""
    return export_bundle(
        digits_run.path, out=bundles_dir / "digits-2.0.0", variant="ort-fp32", fallback="none", reports=reports,
        sign=signing_key,
    )  # fmt: skip
