"""``source: images``: a folder of image files, or an ``.npz`` of images, as one NCHW float32 input.

::

    data:
      source: images
      path: photos/                  # or images.npz: ``images`` (N, H, W[, C]) and optional ``labels``
      layout: class-per-subfolder    # photos/<class>/*.png; labels are the sorted class names' indices
      size: [32, 32]                 # resize to [height, width]
      mean: [0.485, 0.456, 0.406]    # per channel, after scaling to [0, 1]
      std: [0.229, 0.224, 0.225]

Files are read with Pillow (PNG, JPEG, BMP, GIF, WebP, TIFF), converted to RGB (``channels: 3``) or
grayscale (``channels: 1``) and resized bilinearly. ``layout: flat`` reads the folder's own files,
without labels. Samples are ordered by the sha256 of their relative path: a fixed order that mixes the
classes, so ``data.limit`` scores every class, not the first one only. The input is named after the
model's first input unless ``input_name`` says otherwise.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data.base import DATASET_SOURCES, Dataset
from workbench.data.files import LABELS_KEY, make_dataset
from workbench.errors import MissingDependencyError, UsageError
from workbench.recipe.spec import DataSpec, ModelSpec

__all__ = ["IMAGE_SUFFIXES", "images_dataset", "normalise", "with_model_input"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
IMAGES_KEY = "images"
DEFAULT_INPUT = "input"
_UINT8_MAX = 255.0


def with_model_input(spec: DataSpec, model: ModelSpec) -> DataSpec:
    """``spec`` with ``input_name`` filled from the model's first declared input (``input`` when it declares none)."""
    if spec.source != "images" or spec.input_name is not None:
        return spec
    name = model.inputs[0].name if model.inputs else DEFAULT_INPUT
    return spec.model_copy(update={"input_name": name})


@DATASET_SOURCES.register("images")
def images_dataset(spec: DataSpec, cache: Path) -> Dataset:
    """The images, normalised, under ``spec.input_name``; labels from the folder layout or the ``.npz``."""
    path = Path(spec.path or "").expanduser()
    if path.is_dir():
        pixels, labels = _read_folder(path, spec)
    elif path.is_file() and path.suffix == ".npz":
        pixels, labels = _read_npz(path, spec)
    else:
        raise UsageError(f"data.path {spec.path!r}: expected a folder of images or an .npz file")
    batch = normalise(pixels, mean=spec.mean, std=spec.std)
    return make_dataset({spec.input_name or DEFAULT_INPUT: batch}, labels, where=f"data.path {spec.path}")


def normalise(pixels: np.ndarray, *, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """NHWC pixels (uint8, or floats in [0, 1]) → NCHW float32, ``(x - mean) / std`` per channel."""
    channels = pixels.shape[-1]
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise UsageError(f"data.{name} has {len(values)} values; the images have {channels} channels")
    if any(value == 0 for value in std):
        raise UsageError("data.std must not hold 0")
    scaled = pixels.astype(np.float32) / (_UINT8_MAX if pixels.dtype == np.uint8 else 1.0)
    shifted = (scaled - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(shifted.transpose(0, 3, 1, 2))


def _image_module() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise MissingDependencyError("source 'images' reads files with Pillow: pip install pillow") from None
    return Image


def _read_folder(folder: Path, spec: DataSpec) -> tuple[np.ndarray, np.ndarray | None]:
    if spec.size is None:
        raise UsageError("data.size [height, width] is needed to read a folder of images")
    files, labels = _listing(folder, spec.layout)
    order = sorted(
        range(len(files)), key=lambda i: hashlib.sha256(files[i].relative_to(folder).as_posix().encode()).hexdigest()
    )
    pixels = np.stack([_read_image(files[i], spec) for i in order])
    return pixels, None if labels is None else labels[order]


def _listing(folder: Path, layout: str) -> tuple[list[Path], np.ndarray | None]:
    """The image files and, for class-per-subfolder, each one's class index (classes in sorted order)."""
    if layout == "flat":
        files = _images_in(folder)
        if not files:
            raise UsageError(f"data.path {str(folder)!r}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files, None
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    found = [(file, index) for index, directory in enumerate(classes) for file in _images_in(directory)]
    if not found:
        raise UsageError(
            f"data.path {str(folder)!r}: no class subfolders with image files (layout: class-per-subfolder)"
        )
    return [file for file, _ in found], np.asarray([index for _, index in found], dtype=np.int64)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(path: Path, spec: DataSpec) -> np.ndarray:
    """One file as HWC uint8 at ``spec.size``."""
    image_module = _image_module()
    height, width = spec.size or (0, 0)
    try:
        with image_module.open(path) as image:
            converted = image.convert("RGB" if spec.channels == 3 else "L")
            resized = converted.resize((width, height), image_module.Resampling.BILINEAR)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable image ({exc})") from None
    pixels = np.asarray(resized, dtype=np.uint8)
    return pixels if pixels.ndim == 3 else pixels[:, :, None]


def _read_npz(path: Path, spec: DataSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """``images`` (N, H, W) or (N, H, W, C), uint8 or floats in [0, 1]; ``labels`` if any; resized if asked."""
    with np.load(path, allow_pickle=False) as archive:
        if IMAGES_KEY not in archive.files:
            raise UsageError(f"data.path {str(path)!r}: no {IMAGES_KEY!r} array (found {', '.join(archive.files)})")
        pixels = archive[IMAGES_KEY]
        labels = archive[LABELS_KEY] if LABELS_KEY in archive.files else None
    if pixels.ndim == 3:
        pixels = pixels[..., None]
    if pixels.ndim != 4:
        raise UsageError(f"data.path {str(path)!r}: images must be (N, H, W) or (N, H, W, C), got {pixels.shape}")
    if spec.size is not None and tuple(pixels.shape[1:3]) != tuple(spec.size):
        pixels = _resized(pixels, spec, path)
    return pixels, labels


def _resized(pixels: np.ndarray, spec: DataSpec, path: Path) -> np.ndarray:
    if pixels.dtype != np.uint8:
        raise UsageError(
            f"data.path {str(path)!r}: only uint8 images can be resized to data.size; store them at that size"
        )
    image_module = _image_module()
    height, width = spec.size or (0, 0)
    gray = pixels.shape[-1] == 1
    images = [image_module.fromarray(row[..., 0] if gray else row) for row in pixels]
    stacked = np.stack(
        [np.asarray(image.resize((width, height), image_module.Resampling.BILINEAR)) for image in images]
    )
    return stacked if stacked.ndim == 4 else stacked[..., None]
