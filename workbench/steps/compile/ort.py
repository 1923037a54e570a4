"""``compile.ort_graph``: ONNX Runtime graph optimization, saved as a new ``.onnx`` file.

Up to four passes, in this order:

1. ``transformer.fuse_sdpa``: the workbench's own fusion of the scaled-dot-product attention that
   ``torch.onnx.export`` (dynamo) writes — MatMul, Softmax, Reshape and Transpose — into one
   ``com.microsoft.MultiHeadAttention`` per layer. ORT's transformer optimizer does not recognise
   that pattern (measured with torch 2.13 / onnxruntime 1.32 on MiniLM: no attention fused).
2. ``transformer``: ORT's transformer optimizer (``onnxruntime.transformers.optimizer``): LayerNorm,
   Gelu/BiasGelu, attention and embedding fusions for the given ``model_type``.
3. ``trim_padding``: slice the sequence axis of the token inputs to the last position any row of
   the batch attends to, so right-padding costs nothing. Outputs do not change for encoders whose
   outputs have no sequence axis (pooled embeddings, classifiers); the step refuses other models.
4. ORT's own graph optimizer at ``level``, saved through ``SessionOptions.optimized_model_filepath``.

Each fusion is checked on the sample inputs against the input model (``compile_max_abs_diff``).
Figures: ``nodes_before``, ``nodes_after``, ``fused_<OpType>`` (how many more nodes of each fused op
type the result has than the input), ``compile_s`` and ``compile_max_abs_diff``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pydantic import Field

from workbench.artifact import Artifact
from workbench.errors import BuildError
from workbench.steps.base import STEPS, StepConfig, StepContext, expect_config, onnx_output

logger = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"
# Ops that only exist after a fusion: what the ``fused_<OpType>`` figures count.
FUSED_OPS = frozenset(
    {
        "Attention",
        "MultiHeadAttention",
        "EmbedLayerNormalization",
        "SkipLayerNormalization",
        "SkipSimplifiedLayerNormalization",
        "SimplifiedLayerNormalization",
        "LayerNormalization",
        "Gelu",
        "FastGelu",
        "BiasGelu",
        "QuickGelu",
        "GemmFastGelu",
        "FusedMatMul",
        "FusedConv",
        "FusedGemm",
        "BiasSoftmax",
        "BiasAdd",
    }
)
# A rewrite that moves an output further than this (times max(1, largest |output|)) is refused.
PARITY_ATOL = 1e-3
OrtLevel = Literal["basic", "extended", "all"]


class TransformerFusionConfig(StepConfig):
    """ORT's transformer optimizer settings. ``num_heads``/``hidden_size`` 0 = detect from the graph."""

    model_type: Literal["bert", "bart", "gpt2", "t5", "vit", "clip"] = "bert"
    num_heads: int = Field(default=0, ge=0)
    hidden_size: int = Field(default=0, ge=0)
    fuse_sdpa: bool = Field(default=True, description="Fuse torch.export's SDPA pattern into MultiHeadAttention.")


class CompileOrtGraphConfig(StepConfig):
    """``compile.ort_graph`` settings.

    ``level: all`` adds layout changes specific to this machine's CPU (ORT warns the saved model
    should run only where it was made); ``extended`` is the portable default. Example::

        - compile.ort_graph: {level: extended, transformer: {model_type: bert}, trim_padding: attention_mask}
    """

    level: OrtLevel = "extended"
    transformer: TransformerFusionConfig | None = Field(default=None, description="Run ORT's transformer fusions.")
    trim_padding: str | None = Field(default=None, description="Name of the attention-mask input to trim by.")


@STEPS.register("compile.ort_graph")
class CompileOrtGraph:
    """Optimize an ONNX graph with ONNX Runtime and save the result (see the module docstring)."""

    name: ClassVar[str] = "compile.ort_graph"
    Config: ClassVar[type[StepConfig]] = CompileOrtGraphConfig

    def apply(self, artifact: Artifact, config: StepConfig, workdir: Path, context: StepContext) -> Artifact:
        """Write ``workdir/model.onnx``."""
        config = expect_config(self.name, config, CompileOrtGraphConfig)
        path = onnx_output(self.name, artifact, workdir)
        started = time.perf_counter()
        source = onnx.load(str(artifact.path))
        figures: dict[str, float] = {"nodes_before": float(len(source.graph.node))}
        fused_before = count_fused(source)  # before _rewrite, which edits `source` in place
        with tempfile.TemporaryDirectory(prefix="wb-compile-") as scratch:
            rewritten = _rewrite(source, config, Path(scratch))
            optimize_with_ort(rewritten, path, config.level)
        result = onnx.load(str(path))
        figures["nodes_after"] = float(len(result.graph.node))
        gained = count_fused(result) - fused_before  # keeps the op types there are more of
        figures |= {f"fused_{op}": float(n) for op, n in sorted(gained.items())}
        figures["compile_s"] = round(time.perf_counter() - started, 3)
        figures["compile_max_abs_diff"] = parity(artifact.path, path, context.sample_inputs)
        return Artifact(path=path, format="onnx", figures=figures)


def _rewrite(model: onnx.ModelProto, config: CompileOrtGraphConfig, scratch: Path) -> Path:
    """The graph-level passes (1-3); returns the path of the model to hand to ORT."""
    if config.transformer and config.transformer.fuse_sdpa:
        fused = fuse_sdpa_attention(model.graph, config.transformer.num_heads)
        logger.info("fused %d SDPA attention block(s) into MultiHeadAttention", fused)
        if fused:
            _use_ms_domain(model)
    path = scratch / "rewritten.onnx"
    onnx.save(model, str(path))
    if config.transformer:
        path = _transformer_optimizer(path, config.transformer, scratch / "transformer.onnx")
    if config.trim_padding:
        trimmed = onnx.load(str(path))
        trim_padding(trimmed.graph, config.trim_padding)
        onnx.save(trimmed, str(path))
    return path


def _use_ms_domain(model: onnx.ModelProto) -> None:
    if not any(opset.domain == MS_DOMAIN for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


# ----------------------------------------------------------------------------------- ORT passes


def optimize_with_ort(source: Path, target: Path, level: OrtLevel) -> None:
    """Load ``source`` in an InferenceSession at ``level`` and save the optimized graph to ``target``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    options.optimized_model_filepath = str(target)
    if level == "all":
        logger.warning("compile.ort_graph level 'all' saves CPU-specific layouts: serve it on this kind of CPU only")
        options.log_severity_level = 3  # ORT repeats that warning in colour on stderr
    try:
        ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise BuildError(f"ONNX Runtime could not optimize the graph: {_first_line(exc)}") from exc


def _transformer_optimizer(source: Path, config: TransformerFusionConfig, target: Path) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        with _quiet_fusion_logs(), contextlib.redirect_stdout(io.StringIO()) as printed:
            optimized = optimize_model(
                str(source),
                model_type=config.model_type,
                num_heads=config.num_heads,
                hidden_size=config.hidden_size,
                opt_level=0,  # the Python fusions only; ORT's own passes run afterwards at `level`
                use_gpu=False,
            )
    except Exception as exc:  # its fusions raise bare RuntimeErrors and assertion errors
        raise BuildError(
            f"ORT's transformer optimizer ({config.model_type}) failed: {_first_line(exc)}; "
            "try compile.ort_graph without transformer"
        ) from exc
    logger.debug("ORT transformer optimizer printed: %s", printed.getvalue().strip())
    stats = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    logger.info("ORT transformer optimizer (%s): %s", config.model_type, stats or "nothing fused")
    optimized.save_model_to_file(str(target), use_external_data_format=False)
    return target


@contextmanager
def _quiet_fusion_logs() -> Iterator[None]:
    """The optimizer logs (and prints) a warning per fusion it cannot do (symbolic shape inference
    fails on dynamo exports); the figures say what was fused, so keep those out of the terminal."""
    names = [n for n in logging.root.manager.loggerDict if n.startswith(("fusion_", "onnx_model", "optimizer"))]
    names += ["onnxruntime.transformers", "onnx_model_bert", "fusion_skiplayernorm", "fusion_attention"]
    loggers = [logging.getLogger(name) for name in names]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)


def count_fused(model: onnx.ModelProto) -> Counter[str]:
    """How many nodes of each fused op type (FUSED_OPS) the graph holds."""
    return Counter(node.op_type for node in model.graph.node if node.op_type in FUSED_OPS)


def parity(before: Path, after: Path, inputs: dict[str, np.ndarray]) -> float:
    """Largest absolute output difference between two models on ``inputs``; BuildError above PARITY_ATOL."""
    import onnxruntime as ort

    results = []
    for path in (before, after):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = {value.name for value in session.get_inputs()}
        results.append(session.run(None, {k: v for k, v in inputs.items() if k in names}))
    pairs = [(a, b) for a, b in zip(*results, strict=True) if a.size]
    diff = max((float(np.max(np.abs(a - b))) for a, b in pairs), default=0.0)
    scale = max((float(np.max(np.abs(a))) for a, _ in pairs), default=0.0)
    if not diff <= PARITY_ATOL * max(1.0, scale):
        raise BuildError(f"the optimized graph's outputs differ from the input model's by {diff:.3g}")
    return diff


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ----------------------------------------------------------------------- SDPA → MultiHeadAttention


class _Graph:
    """Producer/consumer indexes and constant lookup over a GraphProto (read-only)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.initializers = {init.name: init for init in graph.initializer}
        self.constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}

    def const(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant node, else None."""
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.constants.get(name)
        if node is None or not node.attribute:
            return None
        attribute = node.attribute[0]
        if attribute.name == "value":
            return numpy_helper.to_array(attribute.t)
        return np.asarray(helper.get_attribute_value(attribute))

    def op(self, name: str, *op_types: str) -> onnx.NodeProto | None:
        """The producer of ``name`` if it is one of ``op_types``."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type in op_types else None

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        found = self.consumers.get(name, [])
        return found[0] if len(found) == 1 and found[0].op_type == op_type else None

    def graph_inputs_upstream(self, name: str) -> set[str]:
        """The graph inputs that ``name`` is computed from."""
        inputs = {value.name for value in self.graph.input} - set(self.initializers)
        seen: set[str] = set()
        stack = [name]
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            node = self.producer.get(current)
            if node is not None:
                stack.extend(node.input)
        return seen & inputs


def fuse_sdpa_attention(graph: onnx.GraphProto, num_heads: int = 0) -> int:
    """Replace each ``softmax(q·kᵀ·scale + mask)·v`` block by one MultiHeadAttention; return how many.

    Matches what torch.export's SDPA decomposition becomes in ONNX: Q, K and V each a Linear
    (MatMul + Add) reshaped to heads, the scale as two Muls (on q and on kᵀ) or one Mul/Div after
    q·kᵀ, an optional additive mask derived from one 2-D graph input, and the heads merged back
    by Transpose + Reshape. Blocks that do not match are left as they are.
    """
    index = _Graph(graph)
    replacements: dict[int, onnx.NodeProto] = {}
    masks: dict[str, str] = {}
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        block = _match_block(index, softmax, num_heads)
        if block is None:
            continue
        output_node, attention = block
        mask_input = attention.pop("mask")
        inputs = [attention.pop("q"), attention.pop("k"), attention.pop("v"), ""]
        if mask_input:
            inputs.append(masks.setdefault(str(mask_input), f"{mask_input}_int32_mha"))
        name = f"MultiHeadAttention_{len(replacements)}"
        replacements[id(output_node)] = helper.make_node(
            "MultiHeadAttention", inputs, list(output_node.output), name=name, domain=MS_DOMAIN, **attention
        )
    if not replacements:
        return 0
    casts = [
        helper.make_node("Cast", [source], [cast], name=f"{cast}_cast", to=TensorProto.INT32)
        for source, cast in masks.items()
    ]
    nodes = casts + [replacements.get(id(node), node) for node in graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    remove_dead_nodes(graph)
    return len(replacements)


def _match_block(
    index: _Graph, softmax: onnx.NodeProto, num_heads: int
) -> tuple[onnx.NodeProto, dict[str, Any]] | None:
    """The node whose output the block ends in, and the MultiHeadAttention inputs and attributes."""
    scores, mask = _unmask(index, softmax.input[0])
    product, scale = _unscale(index, scores)
    if product is None or scale is None:
        return None
    q_side, k_side, scale = _split_scale(index, product, scale)
    ending = _heads_merged(index, softmax)
    if ending is None:
        return None
    weighted, output = ending
    q, k, v = (_linear_before_heads(index, name) for name in (q_side, k_side, weighted.input[1]))
    if q is None or k is None or v is None:
        return None
    heads = num_heads or _heads(index, q_side) or 0
    if heads <= 0:
        return None
    mask_input = None
    if mask is not None:
        sources = index.graph_inputs_upstream(mask)
        if len(sources) != 1:
            return None
        mask_input = sources.pop()
    return output, {"q": q, "k": k, "v": v, "mask": mask_input, "num_heads": heads, "scale": scale}


def _heads_merged(index: _Graph, softmax: onnx.NodeProto) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """(probabilities·v MatMul, the Reshape that merges the heads back) after ``softmax``."""
    weighted = index.only_consumer(softmax.output[0], "MatMul")
    if weighted is None or weighted.input[0] != softmax.output[0]:
        return None
    merge = index.only_consumer(weighted.output[0], "Transpose")
    output = index.only_consumer(merge.output[0], "Reshape") if merge is not None else None
    return (weighted, output) if output is not None else None


def _unmask(index: _Graph, name: str) -> tuple[str, str | None]:
    """(scores, additive mask) when ``name`` is ``scores + mask``; else (name, None)."""
    add = index.op(name, "Add")
    if add is None:
        return name, None
    left, right = add.input
    if index.op(left, "MatMul", "Mul", "Div"):
        return left, right
    return name, None


def _unscale(index: _Graph, name: str) -> tuple[onnx.NodeProto | None, float | None]:
    """(q·kᵀ MatMul, scale applied after it: 1.0 when none)."""
    node = index.op(name, "MatMul", "Mul", "Div")
    if node is None or node.op_type == "MatMul":
        return node, 1.0 if node is not None else None
    value = index.const(node.input[1])
    matmul = index.op(node.input[0], "MatMul")
    if value is None or value.size != 1 or matmul is None:
        return None, None
    number = float(value.ravel()[0])
    return matmul, (1.0 / number if node.op_type == "Div" else number)


def _split_scale(index: _Graph, product: onnx.NodeProto, scale: float) -> tuple[str, str, float]:
    """Fold torch.export's Mul-by-√scale on each of q and kᵀ into one scale."""
    sides = []
    for name in product.input:
        mul = index.op(name, "Mul")
        value = index.const(mul.input[1]) if mul is not None else None
        if mul is not None and value is not None and value.size == 1:
            scale *= float(value.ravel()[0])
            sides.append(mul.input[0])
        else:
            sides.append(name)
    return sides[0], sides[1], scale


def _linear_before_heads(index: _Graph, name: str) -> str | None:
    """Walk back through the head-splitting Reshape/Transpose nodes to a Linear's output (MatMul + Add)."""
    node = index.producer.get(name)
    hops = 0
    while node is not None and node.op_type in {"Reshape", "Transpose"}:
        hops += 1
        node = index.producer.get(node.input[0])
    if node is None or hops == 0:
        return None
    linear = node.op_type == "MatMul" or (node.op_type == "Add" and index.op(node.input[0], "MatMul") is not None)
    return str(node.output[0]) if linear else None


def _heads(index: _Graph, q_heads: str) -> int | None:
    """Heads from the Reshape that splits q: its shape's third entry, when known."""
    node = index.producer.get(q_heads)
    while node is not None and node.op_type != "Reshape":
        node = index.producer.get(node.input[0]) if node.input else None
    if node is None:
        return None
    dims = _known_dims(index, node.input[1])
    return dims[2] if dims is not None and len(dims) == 4 and dims[2] > 0 else None


def _known_dims(index: _Graph, name: str) -> list[int] | None:
    """A shape tensor's values, with -1 for the entries computed at run time (a Concat of pieces)."""
    value = index.const(name)
    if value is not None:
        return [int(v) for v in value.ravel()]
    concat = index.op(name, "Concat")
    if concat is None:
        return None
    dims: list[int] = []
    for piece in concat.input:
        part = index.const(piece)
        dims.extend([int(v) for v in part.ravel()] if part is not None else [-1])
    return dims


def remove_dead_nodes(graph: onnx.GraphProto) -> None:
    """Drop nodes and initializers whose outputs nothing reads."""
    outputs = {value.name for value in graph.output}
    nodes = list(graph.node)
    while True:
        used = outputs | {name for node in nodes for name in node.input}
        kept = [node for node in nodes if any(out in used for out in node.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    initializers = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


# ------------------------------------------------------------------------------------ trim padding


def trim_padding(graph: onnx.GraphProto, mask: str) -> list[str]:
    """Slice every token input that shares ``mask``'s sequence axis to the last attended position.

    The length kept is ``max(position + 1 where mask != 0)`` over the batch (at least 1), so any
    padding side is safe: left padding simply trims nothing. Returns the trimmed inputs' names.
    """
    axis = _sequence_axis(graph, mask)
    if any("trim_length" in node.output for node in graph.node):
        raise BuildError("trim_padding: this model is trimmed already")
    trimmed = [value.name for value in graph.input if _dim_param(value, 1) == axis]
    blocked = [value.name for value in graph.output if axis in _dim_params(value)]
    if blocked:
        raise BuildError(f"trim_padding would shorten output(s) {', '.join(blocked)} along {axis!r}")
    for node in graph.node:
        node.input[:] = [f"{name}_trimmed" if name in trimmed else name for name in node.input]
    nodes = _length_nodes(mask) + [
        helper.make_node("Slice", [name, "trim_zero", "trim_length", "trim_one"], [f"{name}_trimmed"])
        for name in trimmed
    ]
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + existing)
    return trimmed


def _sequence_axis(graph: onnx.GraphProto, mask: str) -> str:
    value = next((v for v in graph.input if v.name == mask), None)
    if value is None:
        names = ", ".join(v.name for v in graph.input)
        raise BuildError(f"trim_padding: the model has no input {mask!r} (inputs: {names})")
    axis = _dim_param(value, 1)
    if len(value.type.tensor_type.shape.dim) != 2 or not axis:
        raise BuildError(f"trim_padding: input {mask!r} must be (batch, sequence) with a dynamic sequence axis")
    return axis


def _dim_params(value: onnx.ValueInfoProto) -> list[str]:
    return [dim.dim_param for dim in value.type.tensor_type.shape.dim]


def _dim_param(value: onnx.ValueInfoProto, axis: int) -> str:
    params = _dim_params(value)
    return params[axis] if axis < len(params) else ""


def _length_nodes(mask: str) -> list[onnx.NodeProto]:
    """``trim_length = max(1, max((mask != 0) * (arange(S) + 1)))`` as a 1-element int64 tensor."""

    def const(name: str, values: list[int]) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.INT64, [1], values))

    return [
        const("trim_zero", [0]),
        const("trim_one", [1]),
        helper.make_node("Shape", [mask], ["trim_shape"]),
        helper.make_node("Gather", ["trim_shape", "trim_one"], ["trim_seq"], axis=0),
        helper.make_node("Add", ["trim_seq", "trim_one"], ["trim_seq_end"]),
        helper.make_node("Squeeze", ["trim_seq_end"], ["trim_seq_end_scalar"]),
        helper.make_node("Squeeze", ["trim_one"], ["trim_one_scalar"]),
        helper.make_node("Range", ["trim_one_scalar", "trim_seq_end_scalar", "trim_one_scalar"], ["trim_positions"]),
        helper.make_node("Cast", [mask], ["trim_attended"], to=TensorProto.BOOL),
        helper.make_node("Cast", ["trim_attended"], ["trim_attended_int"], to=TensorProto.INT64),
        helper.make_node("Mul", ["trim_attended_int", "trim_positions"], ["trim_last_positions"]),
        helper.make_node("ReduceMax", ["trim_last_positions"], ["trim_last"], keepdims=0),
        helper.make_node("Unsqueeze", ["trim_last", "trim_zero"], ["trim_last_1d"]),
        helper.make_node("Max", ["trim_last_1d", "trim_one"], ["trim_length"]),
    ]
