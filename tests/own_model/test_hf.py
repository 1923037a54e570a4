"""A Hugging Face checkpoint directory as the model (``source: hf``), judged on a local text file (``source: text``).

The checkpoints are tiny randomly initialised BERTs written here with ``save_pretrained`` (no hub), with a
tokenizer made from a small vocabulary file. The end-to-end test takes one through run → select →
export → verify → serve, and checks an OIP client's answer against the torch source model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from serving_support import harness_process

import workbench
from workbench.data import load_dataset
from workbench.data.text import IGNORE_INDEX, token_accuracy
from workbench.errors import UsageError
from workbench.models import load_source_model
from workbench.models.hf_source import task_from_config
from workbench.models.torch_source import load_torch_model
from workbench.recipe.spec import DataSpec, ModelSpec, Recipe
from workbench.sweep.runner import run_recipe

pytest.importorskip("transformers")

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "runs",
    "fast",
    "slow",
    "good",
    "bad",
    "movie",
    "film",
    "great",
    "awful",
    "is",
    "was",
    "very",
    "not",
]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
SENTENCES = [
    "the cat sat on the mat",
    "the dog runs fast",
    "a great movie",
    "a bad film",
    "the film was very good",
    "not a good movie",
    "the dog was slow",
    "a very awful film",
    "the cat is great",
    "the mat was bad",
    "a dog sat on a cat",
    "the movie runs very slow",
]
MAX_LENGTH = 12


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    """No hub: the checkpoints are local directories."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


def write_checkpoint(folder: Path, architecture: str, num_labels: int = 3) -> Path:
    """A tiny random BERT (``BertForSequenceClassification``, ``BertForTokenClassification`` or
    ``BertModel``) and its fast tokenizer, written with ``save_pretrained``."""
    import transformers

    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=num_labels,
        id2label={i: f"class{i}" for i in range(num_labels)}, label2id={f"class{i}": i for i in range(num_labels)},
    )  # fmt: skip
    torch.manual_seed(0)
    getattr(transformers, architecture)(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("hf") / "classifier", "BertForSequenceClassification")


@pytest.fixture(scope="module")
def reviews_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sentences with label names (the model config's label2id maps them)."""
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    frame = pd.DataFrame({"text": SENTENCES, "label": [f"class{i % 3}" for i in range(len(SENTENCES))]})
    frame.to_csv(path, index=False)
    return path


def classifier_recipe(checkpoint: Path, data: Path) -> Recipe:
    """ONNX pipelines only (every variant can ship); the int8 one is kept only if it stays within 1e-4."""
    return Recipe.model_validate({
        "name": "hf-classifier",
        "model": {"source": "hf", "path": str(checkpoint)},
        "data": {
            "source": "text", "path": str(data), "text_column": "text", "label_column": "label", "limit": 8,
            "tokenizer": {"max_length": MAX_LENGTH},
        },
        "search": {
            "baseline": "ort-fp32",
            "pipelines": {
                "ort-fp32": ["export.onnx"],
                "ort-int8": ["export.onnx", {"quantize.ort_dynamic": {"per_channel": True, "op_types": ["MatMul"]}}],
                "ort-fused": ["export.onnx", {"compile.ort_graph": {"transformer": {"model_type": "bert"}}}],
            },
            "serving": {"base": {"runtime": {"intra_op_threads": 1, "inter_op_threads": 1}}},
        },
        "measure": {"batch_sizes": [1, 4], "warmup_iters": 1, "trials": 2, "trial_duration_s": 0.05,
                    "min_trial_iters": 3},
        "load": {"enabled": False},
        "constraints": {"max_abs_diff": {"max": 1e-4}},
        "objective": {"maximize": "throughput_items_per_s", "batch_size": 4},
    })  # fmt: skip


def oip_body(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": name, "datatype": "INT64", "shape": list(array.shape), "data": array.ravel().tolist()}
            for name, array in inputs.items()
        ]
    }


def torch_outputs(source_path: Path, inputs: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    model = load_torch_model(source_path)
    with torch.inference_mode():
        return model.module(*(torch.from_numpy(inputs[name]) for name in names)).numpy()


# ------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_checkpoint_runs_exports_and_serves_what_the_source_computes(
    classifier: Path, reviews_csv: Path, tmp_path: Path
) -> None:
    recipe = classifier_recipe(classifier, reviews_csv)
    reports = tmp_path / "reports"

    run = run_recipe(recipe, reports=reports)
    selection = workbench.select(str(run.path), reports=reports)
    bundle = workbench.export(str(run.path), out=tmp_path / "bundles" / "reviews-1.0.0", variant=selection.variant,
                              reports=reports)  # fmt: skip
    verified = subprocess.run(
        [sys.executable, "-m", "serving_harness", "verify", str(bundle.path)], capture_output=True, text=True, timeout=120
    )  # fmt: skip
    source = load_source_model(recipe.model)
    dataset = load_dataset(recipe.data, recipe.model).take(4)
    names = [spec.name for spec in source.inputs]
    with harness_process(str(bundle.path), env=dict(os.environ)) as (_, url), httpx.Client(timeout=30) as client:
        answer = client.post(f"{url}/v2/models/{bundle.manifest.name}/infer", json=oip_body(dataset.inputs))

    assert run.read_envelope().status == "complete"
    assert selection.variant in {"ort-fp32", "ort-int8", "ort-fused"}
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert names == ["input_ids", "attention_mask", "token_type_ids"]
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    served = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    assert output["name"] == "logits" and served.shape == (4, 3)
    np.testing.assert_allclose(served, torch_outputs(source.artifact.path, dataset.inputs, names), atol=1e-4)


@pytest.mark.slow
def test_token_classification_from_jsonl_is_scored_on_labelled_tokens(tmp_path: Path) -> None:
    checkpoint = write_checkpoint(tmp_path / "tagger", "BertForTokenClassification", num_labels=2)
    rows = [{"words": s.split(), "tags": [int(w in {"cat", "dog"}) for w in s.split()]} for s in SENTENCES]
    data = tmp_path / "tags.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows))
    recipe = Recipe.model_validate({
        "name": "hf-tagger",
        "model": {"source": "hf", "path": str(checkpoint)},
        "data": {"source": "text", "path": str(data), "text_column": "words", "label_column": "tags",
                 "metric": "token_accuracy", "tokenizer": {"max_length": MAX_LENGTH}},
        "search": {"baseline": "torch-eager", "pipelines": {"torch-eager": [], "ort-fp32": ["export.onnx"]}},
        "measure": {"batch_sizes": [2], "warmup_iters": 1, "trials": 2, "trial_duration_s": 0.05, "min_trial_iters": 3},
        "objective": {"maximize": "throughput_items_per_s"},
    })  # fmt: skip

    run = run_recipe(recipe, reports=tmp_path / "reports")

    frame = run.read_results()
    assert set(frame["status"]) == {"ok"}
    assert set(frame["metric"]) == {"token_accuracy"}
    assert frame["accuracy"].nunique() == 1  # the ONNX export scores as the torch model does
    assert load_source_model(recipe.model).outputs[0].shape == (-1, -1, 2)


@pytest.mark.slow
def test_feature_extraction_from_parquet_keeps_cosine_to_the_source(tmp_path: Path) -> None:
    checkpoint = write_checkpoint(tmp_path / "encoder", "BertModel")
    data = tmp_path / "sentences.parquet"
    pd.DataFrame({"sentence": SENTENCES}).to_parquet(data)
    recipe = Recipe.model_validate({
        "name": "hf-encoder",
        "model": {"source": "hf", "path": str(checkpoint)},
        "data": {"source": "text", "path": str(data), "text_column": "sentence", "metric": "cosine",
                 "tokenizer": {"max_length": MAX_LENGTH, "padding": "longest"}},
        "search": {"baseline": "torch-eager", "pipelines": {"torch-eager": [], "ort-fp32": ["export.onnx"]}},
        "measure": {"batch_sizes": [2], "warmup_iters": 1, "trials": 2, "trial_duration_s": 0.05, "min_trial_iters": 3},
        "objective": {"maximize": "throughput_items_per_s"},
    })  # fmt: skip

    run = run_recipe(recipe, reports=tmp_path / "reports")

    frame = run.read_results()
    assert set(frame["status"]) == {"ok"}
    assert (frame["cosine"] > 0.9999).all()
    source = load_source_model(recipe.model)
    assert [spec.name for spec in source.outputs] == ["last_hidden_state"]
    assert source.outputs[0].shape == (-1, -1, 32)


# ------------------------------------------------------------------------------------------- parts


def test_the_task_comes_from_the_config_architectures() -> None:
    assert task_from_config(["BertForSequenceClassification"], where="x") == "sequence-classification"
    assert task_from_config(["RobertaForTokenClassification"], where="x") == "token-classification"
    assert task_from_config(["BertModel"], where="x") == "feature-extraction"
    with pytest.raises(UsageError, match="give model"):
        task_from_config(["BertForMaskedLM"], where="x")


def test_a_directory_without_a_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no config\.json"):
        load_source_model(ModelSpec(source="hf", path=str(tmp_path)))


def test_label_names_map_through_the_model_config(classifier: Path, reviews_csv: Path) -> None:
    spec = DataSpec(source="text", path=str(reviews_csv), label_column="label", tokenizer={"max_length": MAX_LENGTH})

    dataset = load_dataset(spec, ModelSpec(source="hf", path=str(classifier)))

    assert dataset.labels is not None and dataset.labels.tolist()[:4] == [0, 1, 2, 0]
    assert set(dataset.inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    assert dataset.inputs["input_ids"].shape == (len(SENTENCES), MAX_LENGTH)
    assert dataset.inputs["input_ids"].dtype == np.int64


def test_unknown_label_names_and_missing_columns_say_what_is_wrong(classifier: Path, tmp_path: Path) -> None:
    model = ModelSpec(source="hf", path=str(classifier))
    data = tmp_path / "odd.csv"
    pd.DataFrame({"text": ["a cat", "a dog"], "label": ["cat", "dog"]}).to_csv(data, index=False)

    with pytest.raises(UsageError, match="label2id"):
        load_dataset(DataSpec(source="text", path=str(data), label_column="label"), model)
    with pytest.raises(UsageError, match="no column 'review'"):
        load_dataset(DataSpec(source="text", path=str(data), text_column="review"), model)
    with pytest.raises(UsageError, match=r"tokenizer\.path"):
        load_dataset(DataSpec(source="text", path=str(data)), ModelSpec(source="onnx", path="m.onnx"))


def test_word_labels_land_on_first_tokens_only(classifier: Path, tmp_path: Path) -> None:
    data = tmp_path / "tags.jsonl"
    # [CLS] the cat [SEP] [PAD] [PAD]: the special tokens and the padding are not scored.
    data.write_text(json.dumps({"words": ["the", "cat"], "tags": [0, 1]}) + "\n")
    spec = DataSpec(
        source="text", path=str(data), text_column="words", label_column="tags", tokenizer={"max_length": 6}
    )

    dataset = load_dataset(spec, ModelSpec(source="hf", path=str(classifier)))

    assert dataset.labels is not None
    assert dataset.labels.tolist() == [[IGNORE_INDEX, 0, 1, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]


def test_token_accuracy_skips_ignored_positions() -> None:
    logits = np.zeros((1, 4, 2), np.float32)
    logits[0, :, 1] = [1, 1, -1, 1]  # predicts 1, 1, 0, 1
    labels = np.asarray([[IGNORE_INDEX, 1, 1, IGNORE_INDEX]])

    assert token_accuracy({"logits": logits}, {}, labels) == 0.5
