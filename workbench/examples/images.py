"""The images example: a tiny ResNet-style CNN told apart three colours of 32x32 images, read from a folder.

No download and no torchvision (its PyPI wheel fails to import with the CPU torch pinned here): the
images are generated (:func:`color_images`: a class's base colour, noise, and a bright square at a
random place), training takes a second (deterministic: fixed seed, one thread), and the held-out
images are written as PNG files, class per subfolder, and read back through ``source: images``: the
path a user's own photos take. ``recipes/images-cpu.yaml`` runs it.

:func:`build_tiny_resnet` is also a plain ``nn.Module`` factory for ``source: torch``::

    model: {source: torch, factory: "workbench.examples.images:build_tiny_resnet", kwargs: {classes: 3},
            inputs: [{name: input, datatype: FP32, shape: [-1, 3, 32, 32]}]}
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from serving_harness.runtimes.base import TensorSpec
from serving_harness.runtimes.torch import TORCH_MODEL_FILE
from workbench.data.base import Dataset
from workbench.data.images import images_dataset
from workbench.errors import BuildError
from workbench.examples import EXAMPLES, Example
from workbench.models.base import SourceModel
from workbench.models.torch_source import torch_source_model, write_torch_artifact
from workbench.models.training import single_thread, train_classifier
from workbench.paths import cache_dir
from workbench.recipe.spec import DataSpec, ModelSpec

__all__ = ["build_tiny_resnet", "color_images", "write_image_folder"]

logger = logging.getLogger(__name__)

# Bump when the architecture, the images or the training recipe change: it invalidates cached files.
IMAGES_VERSION = 1
FACTORY = "workbench.examples.images:build_tiny_resnet"
SIZE = 32
CLASSES = ("blue", "green", "red")  # sorted: a class's index is its subfolder's place in sorted order
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
TRAIN_PER_CLASS, TEST_PER_CLASS = 64, 24
MIN_TEST_ACCURACY = 0.95
INPUTS = (TensorSpec(name="input", datatype="FP32", shape=(-1, 3, SIZE, SIZE)),)
OUTPUTS = (TensorSpec(name="logits", datatype="FP32", shape=(-1, len(CLASSES))),)
_BASE_RGB = {"blue": (40, 60, 170), "green": (50, 160, 60), "red": (170, 50, 40)}


class _Residual(nn.Module):
    """conv-bn-relu-conv-bn plus the input, then relu: ResNet's basic block at one width."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + x)


def build_tiny_resnet(classes: int = len(CLASSES), width: int = 16) -> nn.Module:
    """A stem (conv-bn-relu), two residual blocks, global average pooling and a linear layer."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        _Residual(width),
        _Residual(width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, classes),
    )


def color_images(per_class: int, *, size: int = SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of each class, (N, size, size, 3) uint8 in class order, and their labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        for _ in range(per_class):
            pixels = np.asarray(_BASE_RGB[name], np.float32) + rng.normal(0.0, 30.0, (size, size, 3))
            top, left = rng.integers(0, size - size // 4, 2)
            pixels[top : top + size // 4, left : left + size // 4] += 60.0
            images.append(np.clip(pixels, 0, 255).astype(np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def write_image_folder(folder: Path, per_class: int, *, seed: int = 0) -> Path:
    """:func:`color_images` written as PNG files, one subfolder per class (``folder/red/0003.png``)."""
    from PIL import Image

    images, labels = color_images(per_class, seed=seed)
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        target = folder / CLASSES[label] / f"{index:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(target)
    return folder


def _normalised(images: np.ndarray) -> np.ndarray:
    scaled = images.astype(np.float32) / 255.0
    return np.ascontiguousarray(
        ((scaled - np.asarray(MEAN)) / np.asarray(STD)).astype(np.float32).transpose(0, 3, 1, 2)
    )


def train_tiny_resnet(seed: int = 0) -> nn.Module:
    """The ResNet trained on generated images (seed + 1: never the held-out ones); BuildError if it did not learn."""
    images, labels = color_images(TRAIN_PER_CLASS, seed=seed + 1)
    with single_thread():
        torch.manual_seed(seed)
        module = build_tiny_resnet()
        train_classifier(module, _normalised(images), labels, epochs=3, learning_rate=3e-3, seed=seed, batch_size=16)
        test_images, test_labels = color_images(TEST_PER_CLASS, seed=seed)
        with torch.inference_mode():
            predicted = module.eval()(torch.from_numpy(_normalised(test_images))).argmax(dim=1).numpy()
    accuracy = float(np.mean(predicted == test_labels))
    if accuracy < MIN_TEST_ACCURACY:
        raise BuildError(f"the images example reached test accuracy {accuracy:.3f} < {MIN_TEST_ACCURACY} (seed {seed})")
    logger.info("trained the images example: test accuracy %.3f", accuracy)
    return module


def images_source(spec: ModelSpec, cache: Path) -> SourceModel:
    """The trained tiny ResNet as a torch artifact; trained once per (version, seed), then cached."""
    seed = int(spec.options.get("seed", 0))
    directory = cache / "sources" / f"images-v{IMAGES_VERSION}-seed{seed}"
    if not (directory / TORCH_MODEL_FILE).exists():
        module = train_tiny_resnet(seed)
        write_torch_artifact(
            directory, factory=FACTORY, kwargs={}, inputs=INPUTS, outputs=OUTPUTS, state_dict=module.state_dict()
        )
        directory.with_name(directory.name + ".train.json").write_text(json.dumps({"seed": seed}))
    return torch_source_model(directory)


def images_example_data(spec: DataSpec) -> Dataset:
    """The held-out images as PNG files in the cache (written once), read through ``source: images``."""
    folder = cache_dir() / "data" / f"images-v{IMAGES_VERSION}"
    if not folder.is_dir():
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)  # what an interrupted first write left
        write_image_folder(staging, TEST_PER_CLASS, seed=0)
        staging.rename(folder)
    as_files = DataSpec(source="images", path=str(folder), size=(SIZE, SIZE), mean=MEAN, std=STD, input_name="input")
    return images_dataset(as_files, folder)


EXAMPLES.register("images")(Example(model=images_source, data=images_example_data))
