"""compile.ort_graph: the saved graph is optimized (fewer nodes, fused ops), computes the same, and is cached."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from serving_harness.config import RuntimeSettings
from serving_harness.runtimes.base import RuntimeUnavailable
from serving_harness.runtimes.onnxruntime import OnnxRuntime
from workbench.artifact import Artifact
from workbench.data import Dataset
from workbench.errors import BuildError
from workbench.models import SourceModel, load_source_model
from workbench.recipe.spec import ModelSpec, StepSpec
from workbench.steps import CompileOrtGraph, CompileOrtGraphConfig, ExportOnnx, ExportOnnxConfig, StepContext
from workbench.sweep.cache import build

VOCAB, WIDTH, HEADS, LAYERS, SEQ = 50, 32, 4, 2, 12


class TinyEncoderLayer(nn.Module):
    """A post-norm transformer layer written the way Hugging Face BERT is: Linear q/k/v, SDPA, GELU FFN."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out = (nn.Linear(WIDTH, WIDTH) for _ in range(4))
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.ffn = nn.Sequential(nn.Linear(WIDTH, 2 * WIDTH), nn.GELU(), nn.Linear(2 * WIDTH, WIDTH))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        q, k, v = (p(x).view(batch, seq, HEADS, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        attended = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = self.norm1(x + self.out(attended.transpose(1, 2).reshape(batch, seq, WIDTH)))
        return self.norm2(x + self.ffn(x))


class TinyEncoder(nn.Module):
    """Token and position embeddings, two layers, masked mean pooling: MiniLM's shape in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens, self.positions = nn.Embedding(VOCAB, WIDTH), nn.Embedding(64, WIDTH)
        self.layers = nn.ModuleList(TinyEncoderLayer() for _ in range(LAYERS))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
        x = self.tokens(input_ids) + self.positions(positions)
        bias = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, bias)
        mask = attention_mask.unsqueeze(-1).float()
        return (x * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def build_tiny_encoder() -> nn.Module:
    return TinyEncoder()


def _tokens(rows: int, lengths: list[int], *, left: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rows)
    ids = rng.integers(1, VOCAB, (rows, SEQ)).astype(np.int64)
    mask = np.zeros((rows, SEQ), np.int64)
    for row, length in enumerate(lengths):
        if left:
            mask[row, SEQ - length :] = 1
        else:
            mask[row, :length] = 1
    return {"input_ids": ids * mask, "attention_mask": mask}


def _run(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, inputs)[0])


def _ops(artifact: Artifact) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(artifact.path)).graph.node)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Artifact, StepContext]:
    """The tiny encoder exported by export.onnx (dynamo): SDPA in the form torch.export writes it."""
    spec = ModelSpec.model_validate(
        {
            "source": "torch",
            "factory": f"{__name__}:build_tiny_encoder",
            "inputs": [
                {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
                {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]},
            ],
            "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, WIDTH]}],
        }
    )
    root = tmp_path_factory.mktemp("encoder")
    source = load_source_model(spec, root / "cache")
    context = StepContext(
        sample_inputs=_tokens(2, [SEQ, 5]), dynamic_axes=source.dynamic_axes, output_names=("embedding",)
    )
    return ExportOnnx().apply(source.artifact, ExportOnnxConfig(), root / "onnx", context), context


def test_transformer_fusion_makes_attention_and_norm_ops_and_keeps_the_numbers(
    encoder: tuple[Artifact, StepContext], tmp_path: Path
) -> None:
    exported, context = encoder
    config = CompileOrtGraphConfig.model_validate({"transformer": {"model_type": "bert"}})

    compiled = CompileOrtGraph().apply(exported, config, tmp_path, context)

    ops = _ops(compiled)
    assert ops["MultiHeadAttention"] == LAYERS and ops["Softmax"] == 0
    assert ops["SkipLayerNormalization"] == 2 * LAYERS and ops["BiasGelu"] == LAYERS
    figures = compiled.figures
    assert figures["fused_MultiHeadAttention"] == LAYERS and figures["fused_SkipLayerNormalization"] == 2 * LAYERS
    assert figures["nodes_after"] == sum(ops.values()) < figures["nodes_before"] / 2
    batch = _tokens(3, [SEQ, 7, 1])  # padded rows: the attention mask must carry over into the fused op
    np.testing.assert_allclose(_run(compiled.path, batch), _run(exported.path, batch), atol=1e-5)
    assert figures["compile_max_abs_diff"] < 1e-5


def test_trim_padding_gives_the_same_embeddings_for_either_padding_side(
    encoder: tuple[Artifact, StepContext], tmp_path: Path
) -> None:
    exported, context = encoder
    config = CompileOrtGraphConfig(trim_padding="attention_mask")

    trimmed = CompileOrtGraph().apply(exported, config, tmp_path, context)

    assert _ops(trimmed)["Slice"] >= 2
    for batch in (_tokens(3, [5, 2, 4]), _tokens(3, [5, 2, 4], left=True), _tokens(2, [0, 0])):
        np.testing.assert_allclose(_run(trimmed.path, batch), _run(exported.path, batch), atol=1e-5)


def test_trim_padding_refuses_models_with_a_sequence_output(
    tiny_models: str, tmp_path: Path, encoder: tuple[Artifact, StepContext]
) -> None:
    spec = ModelSpec.model_validate(
        {
            "source": "torch",
            "factory": f"{tiny_models}:build_two_heads",
            "inputs": [{"name": "tokens", "datatype": "INT64", "shape": [-1, -1]}],
        }
    )
    source = load_source_model(spec, tmp_path / "cache")
    context = StepContext(
        sample_inputs={"tokens": np.ones((2, 5), np.int64)}, dynamic_axes=source.dynamic_axes, output_names=()
    )
    exported = ExportOnnx().apply(source.artifact, ExportOnnxConfig(dynamo=False), tmp_path / "onnx", context)

    with pytest.raises(BuildError, match=r"trim_padding would shorten output\(s\) output_0"):
        CompileOrtGraph().apply(exported, CompileOrtGraphConfig(trim_padding="tokens"), tmp_path / "a", context)
    with pytest.raises(BuildError, match="the model has no input 'mask'"):
        CompileOrtGraph().apply(exported, CompileOrtGraphConfig(trim_padding="mask"), tmp_path / "b", context)


@pytest.mark.parametrize("level", ["basic", "extended", "all"])
def test_levels_save_a_graph_that_computes_the_same(
    level: str, digits_onnx: Artifact, digits_dataset: Dataset, digits_context: StepContext, tmp_path: Path
) -> None:
    compiled = CompileOrtGraph().apply(
        digits_onnx, CompileOrtGraphConfig.model_validate({"level": level}), tmp_path, digits_context
    )

    assert compiled.path.is_file() and compiled.path != digits_onnx.path
    assert compiled.figures["nodes_before"] == len(onnx.load(str(digits_onnx.path)).graph.node)
    nodes = onnx.load(str(compiled.path)).graph.node
    if level == "extended":  # every Relu folds into the Conv or Gemm before it
        assert compiled.figures["fused_FusedConv"] == 2 and compiled.figures["fused_FusedGemm"] == 1
        assert _ops(compiled)["Relu"] == 0
    if level == "all":  # goes on to ORT's blocked NCHWc layout for this CPU
        assert sum(node.domain == "com.microsoft.nchwc" for node in nodes) >= 2
    np.testing.assert_allclose(
        _run(compiled.path, digits_dataset.inputs), _run(digits_onnx.path, digits_dataset.inputs), atol=1e-4
    )


def test_compile_is_cached_by_build(digits_source: SourceModel, digits_context: StepContext, tmp_path: Path) -> None:
    steps = (StepSpec(name="export.onnx"), StepSpec(name="compile.ort_graph", config={"level": "extended"}))

    first = build(digits_source.artifact, steps, digits_context, tmp_path)
    second = build(digits_source.artifact, steps, digits_context, tmp_path)

    assert [e.cached for e in second.lineage] == [True, True] and not first.lineage[1].cached
    assert first.content_hash == second.content_hash and second.figures["fused_FusedConv"] == 2


def test_compile_needs_an_onnx_model(digits_source: SourceModel, digits_context: StepContext, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"needs an ONNX model, got 'torch': add export\.onnx"):
        CompileOrtGraph().apply(digits_source.artifact, CompileOrtGraphConfig(), tmp_path, digits_context)
    with pytest.raises(ValidationError):
        CompileOrtGraphConfig.model_validate({"level": "max"})


@pytest.mark.parametrize("provider", ["CUDAExecutionProvider", "TensorrtExecutionProvider"])
def test_gpu_execution_providers_fail_in_one_line_without_cuda(provider: str, digits_onnx: Artifact) -> None:
    if provider in ort.get_available_providers():
        pytest.skip(f"{provider} is available here")
    settings = RuntimeSettings(execution_providers=(provider, "CPUExecutionProvider"))

    with pytest.raises(RuntimeUnavailable, match=f"lacks {provider}.*install the \\[gpu\\] extra") as caught:
        OnnxRuntime().load(digits_onnx.path, settings)

    assert "\n" not in str(caught.value)
