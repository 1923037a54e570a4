"""The digits example: a small CNN trained in seconds on scikit-learn's bundled 8x8 digits.

Training is deterministic: a fixed seed (``options.seed``, default 0), a fixed stratified split
and one torch thread, so the same seed gives the same weights and the same content hash.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from serving_harness.runtimes.base import TensorSpec
from serving_harness.runtimes.torch import TORCH_MODEL_FILE
from workbench.errors import BuildError
from workbench.models.base import SourceModel
from workbench.models.torch_source import torch_source_model, write_torch_artifact
from workbench.recipe.spec import ModelSpec

logger = logging.getLogger(__name__)

# Bump when the architecture or the training recipe changes: it invalidates cached weights.
DIGITS_VERSION = 1
FACTORY = "workbench.models.examples.digits:build_digits_cnn"
MIN_TEST_ACCURACY = 0.97
INPUTS = (TensorSpec(name="input", datatype="FP32", shape=(-1, 1, 8, 8)),)
OUTPUTS = (TensorSpec(name="logits", datatype="FP32", shape=(-1, 10)),)
_EPOCHS = 15
_BATCH_SIZE = 32
_LEARNING_RATE = 2e-3


@dataclass(frozen=True)
class DigitsSplit:
    """The fixed train/test split: images (N, 1, 8, 8) float32 in [0, 1], labels int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@functools.cache
def digits_split() -> DigitsSplit:
    """scikit-learn's digits, scaled to [0, 1], split 80/20 stratified with ``random_state=0``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.2, random_state=0, stratify=labels)
    return DigitsSplit(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def build_digits_cnn() -> nn.Module:
    """Two 3x3 convolutions, a max-pool and two linear layers (most weights sit in the first Linear)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 128),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(128, 10),
    )


@dataclass(frozen=True)
class TrainedDigits:
    """A trained model with its held-out accuracy and how long training took."""

    module: nn.Module
    test_accuracy: float
    train_s: float


@contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread, so float reductions run in one order and training (or fine-tuning) is reproducible."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_digits(seed: int = 0) -> TrainedDigits:
    """Train the CNN with Adam on the training split; raise BuildError below MIN_TEST_ACCURACY."""
    split = digits_split()
    started = time.perf_counter()
    with single_thread():
        torch.manual_seed(seed)
        module = build_digits_cnn()
        train_classifier(
            module,
            split.x_train,
            split.y_train,
            epochs=_EPOCHS,
            learning_rate=_LEARNING_RATE,
            seed=seed,
            batch_size=_BATCH_SIZE,
        )
        accuracy = _accuracy(module, split.x_test, split.y_test)
    train_s = time.perf_counter() - started
    if accuracy < MIN_TEST_ACCURACY:
        raise BuildError(f"digits CNN reached test accuracy {accuracy:.4f} < {MIN_TEST_ACCURACY} (seed {seed})")
    logger.info("trained digits CNN in %.2f s: test accuracy %.4f", train_s, accuracy)
    return TrainedDigits(module=module, test_accuracy=accuracy, train_s=train_s)


def train_classifier(
    module: nn.Module,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    learning_rate: float,
    seed: int = 0,
    batch_size: int = 32,
) -> None:
    """Adam + cross-entropy on (inputs, labels) for ``epochs``: trains the digits CNN and backs fine-tune callables."""
    x, y = torch.from_numpy(np.ascontiguousarray(inputs)), torch.from_numpy(np.ascontiguousarray(labels))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=learning_rate)
    module.train()
    with single_thread():
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), batch_size):
                index = order[start : start + batch_size]
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(module(x[index]), y[index])
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
    module.eval()


def _accuracy(module: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    with torch.inference_mode():
        predicted = module(torch.from_numpy(images)).argmax(dim=1).numpy()
    return float(np.mean(predicted == labels))


def digits_source(spec: ModelSpec, cache: Path) -> SourceModel:
    """The trained digits CNN as a torch artifact; trained once per (version, seed), then cached."""
    seed = int(spec.options.get("seed", 0))
    directory = cache / "sources" / f"digits-v{DIGITS_VERSION}-seed{seed}"
    if not (directory / TORCH_MODEL_FILE).exists():
        trained = train_digits(seed)
        write_torch_artifact(
            directory,
            factory=FACTORY,
            kwargs={},
            inputs=INPUTS,
            outputs=OUTPUTS,
            state_dict=trained.module.state_dict(),
        )
        record = {"test_accuracy": trained.test_accuracy, "train_s": round(trained.train_s, 3), "seed": seed}
        directory.with_name(directory.name + ".train.json").write_text(json.dumps(record))
    return torch_source_model(directory)
