"""Fixtures for the serving tests: the small real ONNX models, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import serving_support as support


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("serving-models")
    support.double_model(directory / "double.onnx")
    support.affine_model(directory / "affine.onnx")
    support.int64_model(directory / "int64.onnx")
    support.sequence_model(directory / "sequence.onnx")
    support.text_model(directory / "text.onnx")
    support.fixed_model(directory / "fixed.onnx")
    support.identity_model(directory / "identity.onnx")
    support.lookup_model(directory / "lookup.onnx")
    support.broken_model(directory / "broken.onnx")
    return directory
