"""The digits example: a small CNN trained in seconds on scikit-learn's bundled 8x8 digits, judged on
the held-out test split.

Training is deterministic: a fixed seed (``options.seed``, default 0), a fixed stratified split
and one torch thread, so the same seed gives the same weights and the same content hash.
:func:`fine_tune_digits` is the fine-tune callable for the prune steps: it trains on the training
split, never on the scored one.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from serving_harness.runtimes.base import TensorSpec
from serving_harness.runtimes.torch import TORCH_MODEL_FILE
from workbench.data.base import Dataset
from workbench.errors import BuildError
from workbench.examples import EXAMPLES, Example
from workbench.models.base import SourceModel
from workbench.models.torch_source import torch_source_model, write_torch_artifact
from workbench.models.training import single_thread, train_classifier
from workbench.recipe.spec import DataSpec, ModelSpec

if TYPE_CHECKING:
    from workbench.steps.prune import FineTuneRequest

logger = logging.getLogger(__name__)

# Bump when the architecture, the training recipe or FACTORY changes: it invalidates cached weights.
# (2: the example moved from workbench.models.examples to workbench.examples.)
DIGITS_VERSION = 2
FACTORY = "workbench.examples.digits:build_digits_cnn"
MIN_TEST_ACCURACY = 0.97
CALIBRATION_SAMPLES = 512
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


# ------------------------------------------------------------------------------------------ model


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


# ------------------------------------------------------------------------------------------- data


def digits_dataset(spec: DataSpec) -> Dataset:
    """The 360 held-out images (N, 1, 8, 8) float32 with int64 labels; calibration from the training split."""
    split = digits_split()
    return Dataset({"input": split.x_test}, split.y_test, calibration={"input": split.x_train[:CALIBRATION_SAMPLES]})


def fine_tune_digits(module: nn.Module, request: FineTuneRequest) -> None:
    """Fine-tune a (pruned) digits CNN on the training split (never the test split), for the prune steps::

    - prune.structured: {amount: 0.5, fine_tune: {function: workbench.examples.digits:fine_tune_digits, epochs: 5}}
    """
    split = digits_split()
    train_classifier(
        module,
        split.x_train,
        split.y_train,
        epochs=request.epochs,
        learning_rate=request.learning_rate,
        seed=request.seed,
        batch_size=int(request.options.get("batch_size", 32)),
    )


EXAMPLES.register("digits")(Example(model=digits_source, data=digits_dataset))
