"""An image model of the user's own (any ``nn.Module`` factory: a ResNet-style CNN defined beside these tests)
judged on a folder of PNG files (``source: images``), and the bundled ``images`` example.

The end-to-end test trains the CNN for a second on generated colour images, then takes it through
run → select → export → verify → serve, and checks an OIP client's answer against the torch model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import resnet_tiny
import torch
from serving_support import harness_process

import workbench
from workbench.data import load_dataset
from workbench.errors import UsageError
from workbench.examples.images import color_images, write_image_folder
from workbench.models.torch_source import load_torch_model
from workbench.models.training import train_classifier
from workbench.recipe.loader import load_recipe
from workbench.recipe.spec import DataSpec, ModelSpec, Recipe
from workbench.sweep.runner import run_recipe

pytest.importorskip("PIL")

ROOT = Path(__file__).parents[2]
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
INPUT = {"name": "image", "datatype": "FP32", "shape": [-1, 3, 32, 32]}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """36 PNG files: blue/, green/, red/ (12 each)."""
    return write_image_folder(tmp_path_factory.mktemp("images") / "photos", per_class=12, seed=0)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet_tiny trained on other generated images (seed 3) until it tells the colours apart."""
    images, labels = color_images(32, seed=3)
    scaled = (images.astype(np.float32) / 255.0 - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    torch.manual_seed(0)
    module = resnet_tiny.make()
    train_classifier(module, scaled.transpose(0, 3, 1, 2).copy(), labels, epochs=3, learning_rate=3e-3, batch_size=16)
    path = tmp_path_factory.mktemp("weights") / "resnet_tiny.pt"
    torch.save(module.state_dict(), path)
    return path


def photos_data(photos: Path, **extra: object) -> DataSpec:
    return DataSpec.model_validate(
        {"source": "images", "path": str(photos), "size": [32, 32], "mean": MEAN, "std": STD, **extra}
    )


def image_recipe(photos: Path, weights: Path) -> Recipe:
    return Recipe.model_validate({
        "name": "own-images",
        "model": {"source": "torch", "factory": "resnet_tiny:make", "weights": str(weights), "inputs": [INPUT]},
        "data": photos_data(photos, limit=24).model_dump(exclude_unset=True),
        "search": {
            "baseline": "ort-fp32",
            "pipelines": {
                "ort-fp32": ["export.onnx"],
                "ort-int8": ["export.onnx", {"quantize.ort_dynamic": {"per_channel": True, "op_types": ["Conv", "Gemm"]}}],
            },
            "serving": {"base": {"runtime": {"intra_op_threads": 1, "inter_op_threads": 1}}},
        },
        "measure": {"batch_sizes": [1, 4], "warmup_iters": 1, "trials": 2, "trial_duration_s": 0.05,
                    "min_trial_iters": 3},
        "constraints": {"max_abs_diff": {"max": 1e-4}},
        "objective": {"maximize": "throughput_items_per_s", "batch_size": 4},
    })  # fmt: skip


@pytest.mark.slow
def test_an_image_model_runs_exports_and_serves_what_torch_computes(
    photos: Path, weights: Path, tmp_path: Path
) -> None:
    recipe = image_recipe(photos, weights)
    reports = tmp_path / "reports"

    run = run_recipe(recipe, reports=reports)
    selection = workbench.select(str(run.path), reports=reports)
    bundle = workbench.export(str(run.path), out=tmp_path / "bundles" / "colours-1.0.0", variant=selection.variant,
                              reports=reports)  # fmt: skip
    verified = subprocess.run(
        [sys.executable, "-m", "serving_harness", "verify", str(bundle.path)], capture_output=True, text=True, timeout=120
    )  # fmt: skip
    rows = load_dataset(recipe.data, recipe.model).inputs["image"][:4]
    with harness_process(str(bundle.path), env=dict(os.environ)) as (_, url), httpx.Client(timeout=30) as client:
        body = {
            "inputs": [{"name": "image", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}]
        }
        answer = client.post(f"{url}/v2/models/{bundle.manifest.name}/infer", json=body)

    frame = run.read_results()
    assert run.read_envelope().status == "complete"
    assert frame[frame["variant"] == "ort-fp32"]["accuracy"].iloc[0] == 1.0
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    served = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    module = load_torch_model(workbench.models.load_source_model(recipe.model).artifact.path).module
    with torch.inference_mode():
        expected = module(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-4)


@pytest.mark.slow
def test_the_images_recipe_runs_from_a_fresh_clone(tmp_path: Path) -> None:
    fast = ["measure.trials=2", "measure.trial_duration_s=0.05", "measure.warmup_iters=1", "measure.min_trial_iters=3"]
    recipe = load_recipe(ROOT / "recipes" / "images-cpu.yaml", fast)

    run = run_recipe(recipe, reports=tmp_path)

    frame = run.read_results()
    assert set(frame["status"]) == {"ok"}
    assert (frame[frame["variant"] == "torch-eager"]["accuracy"] >= 0.95).all()


# ------------------------------------------------------------------------------------------- parts


def test_a_class_per_subfolder_folder_gives_normalised_nchw_and_mixed_labels(photos: Path) -> None:
    dataset = load_dataset(photos_data(photos), ModelSpec(source="torch", factory="resnet_tiny:make", inputs=[INPUT]))

    (name,) = dataset.inputs
    images = dataset.inputs[name]
    assert name == "image"  # the model's first input names it
    assert images.shape == (36, 3, 32, 32) and images.dtype == np.float32
    assert dataset.labels is not None and sorted(np.bincount(dataset.labels)) == [12, 12, 12]
    assert len(set(dataset.labels[:6].tolist())) > 1  # data.limit scores every class, not the first one only
    assert images.min() > -2.5 and images.max() < 2.5  # (x / 255 - 0.5) / 0.25


def test_an_npz_of_uint8_images_is_resized_and_keeps_its_labels(tmp_path: Path) -> None:
    images, labels = color_images(2, size=16, seed=1)
    path = tmp_path / "images.npz"
    np.savez(path, images=images, labels=labels)

    dataset = load_dataset(DataSpec(source="images", path=str(path), size=(8, 8)), ModelSpec(source="onnx", path="m"))

    assert dataset.inputs["input"].shape == (6, 3, 8, 8)
    assert dataset.labels is not None and dataset.labels.tolist() == labels.tolist()
    assert dataset.inputs["input"].min() >= 0.0 and dataset.inputs["input"].max() <= 1.0


def test_a_flat_folder_has_no_labels_and_grayscale_has_one_channel(photos: Path) -> None:
    spec = photos_data(photos / "red", layout="flat", channels=1, mean=[0.5], std=[0.25], input_name="x")

    dataset = load_dataset(spec, ModelSpec(source="onnx", path="m"))

    assert dataset.labels is None and dataset.inputs["x"].shape == (12, 1, 32, 32)


def test_mistakes_in_the_image_settings_say_what_to_fix(photos: Path, tmp_path: Path) -> None:
    model = ModelSpec(source="onnx", path="m")
    with pytest.raises(UsageError, match=r"data\.size"):
        load_dataset(DataSpec(source="images", path=str(photos)), model)
    with pytest.raises(UsageError, match="mean has 2 values"):
        load_dataset(photos_data(photos, mean=[0.5, 0.5]), model)
    with pytest.raises(UsageError, match="no class subfolders"):
        load_dataset(photos_data(tmp_path), model)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(UsageError, match="not a readable image"):
        load_dataset(photos_data(tmp_path), model)
