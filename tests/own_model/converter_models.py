"""Classifiers from a non-torch ONNX converter (skl2onnx), as a user would bring them, with their test split.

Each is trained in well under a second on scikit-learn's digits; its first output is an INT64 label, the
second the probabilities (a float tensor, or skl2onnx's default ZipMap: a sequence of maps). Test modules
import the fixture (``from converter_models import own_model_dir``) after ``pytest.importorskip("skl2onnx")``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    features, labels = load_digits(return_X_y=True)
    features = (features / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(features, labels, test_size=171, random_state=0)
    return x_train, x_test, y_train, y_test


def _convert(estimator: object, sample: np.ndarray, path: Path, *, zipmap: bool) -> Path:
    from skl2onnx import to_onnx

    options = None if zipmap else {id(estimator): {"zipmap": False}}
    path.write_bytes(to_onnx(estimator, sample[:1], options=options).SerializeToString())
    return path


@pytest.fixture(scope="session")
def own_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mlp.onnx (label + probabilities tensors), mlp_zipmap.onnx (the converter's default), scaled_mlp.onnx
    (a StandardScaler + MLP pipeline: ORT's pre-processing cannot type its Scaler) and test.npz (X, labels)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folder = tmp_path_factory.mktemp("own-model")
    x_train, x_test, y_train, y_test = _split()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a few epochs are enough for these tests
        mlp = MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=0).fit(x_train, y_train)
        scaled = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), max_iter=30, random_state=0))
        scaled.fit(x_train, y_train)
    _convert(mlp, x_train, folder / "mlp.onnx", zipmap=False)
    _convert(mlp, x_train, folder / "mlp_zipmap.onnx", zipmap=True)
    _convert(scaled, x_train, folder / "scaled_mlp.onnx", zipmap=False)
    np.savez(folder / "test.npz", X=x_test, labels=y_test.astype(np.int64))
    return folder
