"""Quantization steps with ONNX Runtime.

- ``quantize.ort_dynamic``: weights int8 ahead of time, activation scales computed at run time.
- ``quantize.ort_static``: weights and activations int8 in QDQ form, activation ranges calibrated
  on held-out samples of the recipe's data (``StepContext.calibration_inputs``), never the scored ones
  unless the data has no others (the run warns, and the figure ``calibration_held_out`` is 0).

Both run ORT's ``quant_pre_process`` (shape inference) first unless ``preprocess: false``. It is an aid, not
a requirement: when quantizing after it fails (its shape inference stops at an operator it does not know,
such as skl2onnx's ``Scaler``, and ``quantize_dynamic`` then finds no type for a weight), the step quantizes
again without it, logs a warning with the reason, and records the figure ``preprocess_skipped: 1``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import onnx
from onnx import helper, numpy_helper
from pydantic import Field, field_validator

from workbench.artifact import Artifact
from workbench.errors import BuildError, is_programming_error
from workbench.steps.base import STEPS, StepConfig, StepContext, expect_config, onnx_output

logger = logging.getLogger(__name__)

# Nodes that compute in integers after quantization: what ``quantized_nodes`` counts.
INTEGER_OPS = frozenset(
    {"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention", "QGemm"}
)
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
MAX_CALIBRATION_BATCH = 64
QuantTypeName = Literal["qint8", "quint8"]


class QuantizeOrtDynamicConfig(StepConfig):
    """``quantize.ort_dynamic`` settings.

    The default leaves convolutions in fp32: ORT's dynamic ConvInteger ran 5-9x slower than fp32
    Conv on the CPUs this was measured on. Example::

        - quantize.ort_dynamic: {per_channel: true, op_types: [MatMul, Gemm]}
    """

    per_channel: bool = Field(default=True, description="One scale per output channel instead of per tensor.")
    op_types: tuple[str, ...] = Field(default=("MatMul", "Gemm"), min_length=1, description="Op types to quantize.")
    weight_type: Literal["qint8", "quint8"] = "qint8"
    reduce_range: bool | Literal["auto"] = Field(
        default="auto",
        validate_default=True,
        description="7-bit weights. 'auto': on x86 CPUs without VNNI, whose u8×s8 kernels saturate on full-range "
        "weights (measured on an AVX2 EPYC: cosine 0.98 full range, 0.9998 reduced, on an MLP).",
    )
    preprocess: bool = Field(default=True, description="Run ORT's quant_pre_process (shape inference) first.")

    @field_validator("reduce_range")
    @classmethod
    def _resolve_auto(cls, value: bool | str) -> bool:
        # Resolved here so the build cache key holds the value actually used on this machine.
        return needs_reduced_range() if value == "auto" else bool(value)


def needs_reduced_range() -> bool:
    """True on x86 without VNNI (AVX2/AVX-512 u8×s8 multiply-adds saturate int16 with 8-bit weights)."""
    from workbench.host import cpu_flags

    if platform.machine().lower() not in {"x86_64", "amd64", "i686", "x86"}:
        return False
    return not (cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


@STEPS.register("quantize.ort_dynamic")
class QuantizeOrtDynamic:
    """Dynamic int8 quantization with ``onnxruntime.quantization.quantize_dynamic``.

    ORT's dynamic mode has no integer Gemm, so when ``Gemm`` is asked for, Gemm nodes with a
    constant weight are first rewritten here as MatMul (+ Add), which it does quantize. (Recent ORT
    versions rewrite every Gemm themselves; doing it here works on older ones too, and the nodes to
    quantize are named explicitly, so ``op_types: [MatMul]`` leaves the former Gemms in fp32.)
    Figures: ``quantize_s``, ``size_ratio`` (new bytes / old bytes), ``quantized_nodes``.
    """

    name: ClassVar[str] = "quantize.ort_dynamic"
    Config: ClassVar[type[StepConfig]] = QuantizeOrtDynamicConfig

    def apply(self, artifact: Artifact, config: StepConfig, workdir: Path, context: StepContext) -> Artifact:
        """Write ``workdir/model.onnx``."""
        config = expect_config(self.name, config, QuantizeOrtDynamicConfig)
        path = onnx_output(self.name, artifact, workdir)
        started = time.perf_counter()

        def quantize(settings: QuantizeOrtDynamicConfig) -> None:
            with tempfile.TemporaryDirectory(prefix="wb-quantize-") as scratch:
                prepared, nodes = _prepare(artifact.path, settings, Path(scratch))
                _quantize(prepared, path, settings, nodes)

        skipped = with_preprocess_fallback(self.name, config, quantize)
        figures = {
            **skipped,
            "quantize_s": round(time.perf_counter() - started, 3),
            "size_ratio": round(path.stat().st_size / artifact.size_bytes, 4),
            "quantized_nodes": float(count_integer_nodes(onnx.load(str(path)))),
        }
        return Artifact(path=path, format="onnx", figures=figures)


PreprocessedConfig = TypeVar("PreprocessedConfig", "QuantizeOrtDynamicConfig", "QuantizeOrtStaticConfig")


def with_preprocess_fallback(
    step: str, config: PreprocessedConfig, quantize: Callable[[PreprocessedConfig], None]
) -> dict[str, float]:
    """``quantize(config)``; if that fails with pre-processing on, once more without it.

    Returns ``{"preprocess_skipped": 1.0}`` when the retry was needed (a figure the variant records), else
    nothing. A failure without pre-processing, or of the retry, is the step's failure.
    """
    try:
        quantize(config)
    except BuildError:
        raise  # ours (no nodes to quantize, no calibration data): pre-processing is not the cause
    except Exception as exc:
        if not config.preprocess or is_programming_error(exc):
            raise
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        logger.warning(
            "%s: quantizing after ORT's pre-processing failed (%s); quantizing again without it "
            "(preprocess: false; the variant records preprocess_skipped: 1)",
            step,
            reason[:300],
        )
        quantize(config.model_copy(update={"preprocess": False}))
        return {"preprocess_skipped": 1.0}
    return {}


def _prepare(source: Path, config: QuantizeOrtDynamicConfig, scratch: Path) -> tuple[Path, list[str]]:
    """Preprocess, rewrite Gemm if asked, and name the nodes to quantize."""
    path = preprocess(source, scratch / "preprocessed.onnx") if config.preprocess else source
    model = onnx.load(str(path))
    _name_nodes(model.graph)
    rewritten = gemm_to_matmul(model.graph) if "Gemm" in config.op_types else []
    nodes = [n.name for n in model.graph.node if n.op_type in config.op_types or n.name in rewritten]
    prepared = scratch / "prepared.onnx"
    onnx.save(model, str(prepared))
    return prepared, nodes


def _quantize(source: Path, target: Path, config: QuantizeOrtDynamicConfig, nodes: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not nodes:
        raise BuildError(f"the model has no {'/'.join(config.op_types)} nodes to quantize")
    weight_type = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}[config.weight_type]
    op_types = sorted({*config.op_types, "MatMul"} - {"Gemm"})
    quantize_dynamic(
        source,
        target,
        op_types_to_quantize=op_types,
        nodes_to_quantize=nodes,
        per_channel=config.per_channel,
        reduce_range=config.reduce_range,
        weight_type=weight_type,
    )


def preprocess(source: Path, target: Path) -> Path:
    """ORT's ``quant_pre_process``; without symbolic shapes if those fail; else the model unchanged."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, target = source.resolve(), target.resolve()
    attempts: list[Callable[[], None]] = [
        lambda: quant_pre_process(str(source), str(target)),
        lambda: quant_pre_process(str(source), str(target), skip_symbolic_shape=True),
    ]
    shape_logger = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
    level = shape_logger.level
    shape_logger.setLevel(logging.ERROR)  # its failures are handled below
    try:
        # A failed symbolic shape inference saves its half-done model (and a <uuid>.data file of
        # all the weights) into the working directory: keep that litter in our scratch directory.
        with contextlib.chdir(target.parent):
            return _first_success(attempts, source, target)
    finally:
        shape_logger.setLevel(level)


def _first_success(attempts: list[Callable[[], None]], source: Path, target: Path) -> Path:
    for attempt in attempts:
        try:
            attempt()
        except Exception as exc:  # ORT raises bare Exceptions from shape inference
            logger.info("quant_pre_process failed (%s: %s); trying less", type(exc).__name__, exc)
            continue
        return target
    logger.warning("quant_pre_process failed; quantizing the model without preprocessing")
    return source


def count_integer_nodes(model: onnx.ModelProto) -> int:
    """How many nodes compute in integers (MatMulInteger, ConvInteger and friends)."""
    return sum(node.op_type in INTEGER_OPS for node in model.graph.node)


def _name_nodes(graph: onnx.GraphProto) -> None:
    """Give every node a unique name: ``nodes_to_quantize`` selects nodes by name."""
    seen: set[str] = set()
    for index, node in enumerate(graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)


def gemm_to_matmul(graph: onnx.GraphProto) -> list[str]:
    """Rewrite ``Gemm(A, B[, C])`` with constant B, alpha = beta = 1, transA = 0 as ``MatMul(A, B) [+ C]``.

    A transposed B (``transB = 1``, what torch's Linear exports) is stored transposed once. Returns
    the names of the new MatMul nodes.
    """
    initializers = {init.name: init for init in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    rewritten: list[str] = []
    replaced: list[onnx.NodeProto] = []
    for node in graph.node:
        if not _plain_gemm(node, initializers):
            nodes.append(node)
            continue
        new = _as_matmul(node, graph, initializers)
        nodes.extend(new)
        rewritten.append(new[0].name)
        replaced.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused(graph, {node.input[1] for node in replaced})
    return rewritten


def _plain_gemm(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> bool:
    if node.op_type != "Gemm" or node.input[1] not in initializers:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)


def _as_matmul(
    node: onnx.NodeProto, graph: onnx.GraphProto, initializers: dict[str, onnx.TensorProto]
) -> list[onnx.NodeProto]:
    weight = node.input[1]
    if any(a.name == "transB" and helper.get_attribute_value(a) for a in node.attribute):
        weight = _transposed(weight, graph, initializers)
    has_bias = len(node.input) > 2 and bool(node.input[2])
    product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
    matmul = helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}_MatMul")
    if not has_bias:
        return [matmul]
    return [matmul, helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_Add")]


def _transposed(name: str, graph: onnx.GraphProto, initializers: dict[str, onnx.TensorProto]) -> str:
    new_name = f"{name}_transposed"
    if new_name not in initializers:
        array = numpy_helper.to_array(initializers[name]).T.copy()
        initializers[new_name] = numpy_helper.from_array(array, new_name)
        graph.initializer.append(initializers[new_name])
    return new_name


def _drop_unused(graph: onnx.GraphProto, candidates: set[str]) -> None:
    """Remove the rewritten Gemms' original weights when nothing reads them any more."""
    used = {name for node in graph.node for name in node.input}
    used |= {value.name for value in (*graph.input, *graph.output)}
    kept = [init for init in graph.initializer if init.name in used or init.name not in candidates]
    del graph.initializer[:]
    graph.initializer.extend(kept)


# ------------------------------------------------------------------------------ static (QDQ, calibrated)

CalibrateMethodName = Literal["minmax", "entropy", "percentile"]


class QuantizeOrtStaticConfig(StepConfig):
    """``quantize.ort_static`` settings.

    Activation ranges are calibrated on the first ``calibration_samples`` samples the run hands to
    the step: the data's held-out samples (the digits training split, MiniLM sentences past
    ``data.limit``, file data past ``data.limit``). Example::

        - quantize.ort_static: {calibrate_method: percentile, calibration_samples: 256, op_types: [Conv, Gemm]}
    """

    calibrate_method: CalibrateMethodName = Field(default="minmax", description="minmax | entropy | percentile.")
    calibration_samples: int = Field(default=128, ge=1, description="Samples of the recipe's data to calibrate on.")
    percentile: float = Field(default=99.999, gt=90, le=100, description="Range kept by 'percentile' calibration.")
    per_channel: bool = Field(default=True, description="One weight scale per output channel.")
    op_types: tuple[str, ...] = Field(default=("Conv", "MatMul", "Gemm"), min_length=1)
    activation_type: QuantTypeName = "quint8"
    weight_type: QuantTypeName = "qint8"
    reduce_range: bool | Literal["auto"] = Field(
        default="auto", validate_default=True, description="7-bit weights; 'auto' as in quantize.ort_dynamic."
    )
    preprocess: bool = Field(default=True, description="Run ORT's quant_pre_process (shape inference) first.")

    @field_validator("reduce_range")
    @classmethod
    def _resolve_auto(cls, value: bool | str) -> bool:
        return needs_reduced_range() if value == "auto" else bool(value)


@STEPS.register("quantize.ort_static")
class QuantizeOrtStatic:
    """Static int8 quantization in QDQ format with ``onnxruntime.quantization.quantize_static``.

    Weights are stored int8; QuantizeLinear/DequantizeLinear pairs carry the calibrated activation
    ranges, and ONNX Runtime fuses them with their neighbours into integer kernels at load time.
    Figures: ``quantize_s``, ``size_ratio``, ``calibration_samples`` (used), ``qdq_nodes`` (Q and DQ
    nodes) and ``quantized_nodes`` (nodes of ``op_types`` that read a dequantized input).
    """

    name: ClassVar[str] = "quantize.ort_static"
    Config: ClassVar[type[StepConfig]] = QuantizeOrtStaticConfig
    uses_calibration: ClassVar[bool] = True

    def apply(self, artifact: Artifact, config: StepConfig, workdir: Path, context: StepContext) -> Artifact:
        """Write ``workdir/model.onnx``."""
        config = expect_config(self.name, config, QuantizeOrtStaticConfig)
        path = onnx_output(self.name, artifact, workdir)
        started = time.perf_counter()
        samples: list[int] = []

        def quantize(settings: QuantizeOrtStaticConfig) -> None:
            with tempfile.TemporaryDirectory(prefix="wb-quantize-") as scratch:
                prepared = (
                    preprocess(artifact.path, Path(scratch) / "prepared.onnx") if settings.preprocess else artifact.path
                )
                reader = CalibrationReader.take(
                    context.calibration_inputs, _graph_inputs(prepared), settings.calibration_samples
                )
                _quantize_static(prepared, path, settings, reader)
                samples.append(reader.samples)

        skipped = with_preprocess_fallback(self.name, config, quantize)
        model = onnx.load(str(path))
        figures = {
            **skipped,
            "quantize_s": round(time.perf_counter() - started, 3),
            "size_ratio": round(path.stat().st_size / artifact.size_bytes, 4),
            "calibration_samples": float(samples[-1]),
            "calibration_held_out": float(context.calibration_held_out),
            "qdq_nodes": float(sum(node.op_type in QDQ_OPS for node in model.graph.node)),
            "quantized_nodes": float(count_qdq_quantized(model, config.op_types)),
        }
        return Artifact(path=path, format="onnx", figures=figures)


class CalibrationReader:
    """ORT's CalibrationDataReader protocol (``get_next``) over the first N samples of some batches."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.samples = sum(len(next(iter(batch.values()))) for batch in batches)
        self._batches: Iterator[dict[str, np.ndarray]] = iter(batches)

    @classmethod
    def take(cls, batches: tuple[dict[str, np.ndarray], ...], input_names: list[str], count: int) -> CalibrationReader:
        """The first ``count`` samples of ``batches``, restricted to the model's inputs."""
        if not batches:
            raise BuildError(
                "quantize.ort_static needs calibration data, and the run passed none "
                "(give the recipe a data: section; the step calibrates on its first samples)"
            )
        missing = sorted(set(input_names) - set(batches[0]))
        if missing:
            raise BuildError(f"the calibration data lacks the model input(s) {', '.join(missing)}")
        pooled = {name: np.concatenate([batch[name] for batch in batches])[:count] for name in input_names}
        total = len(pooled[input_names[0]])
        # ORT's histogram calibrators (entropy, percentile) stack the batches: they must be the same size.
        size = max(d for d in range(1, min(total, MAX_CALIBRATION_BATCH) + 1) if total % d == 0)
        return cls(
            [{name: np.ascontiguousarray(a[i : i + size]) for name, a in pooled.items()} for i in range(0, total, size)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or None when calibration has seen them all."""
        return next(self._batches, None)


def _graph_inputs(path: Path) -> list[str]:
    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {init.name for init in graph.initializer}
    return [value.name for value in graph.input if value.name not in constants]


def _quant_type(name: QuantTypeName) -> Any:
    from onnxruntime.quantization import QuantType

    return {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}[name]


def _quantize_static(source: Path, target: Path, config: QuantizeOrtStaticConfig, reader: CalibrationReader) -> None:
    from onnxruntime.quantization import CalibrationMethod

    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[config.calibrate_method]
    # ORT keeps every calibration batch's intermediate tensors in memory (its option to cap that,
    # CalibMaxIntermediateOutputs, drops the collected ranges in ORT 1.32): mind calibration_samples.
    extra: dict[str, Any] = {"CalibPercentile": config.percentile} if config.calibrate_method == "percentile" else {}
    progress = io.StringIO()  # ORT's calibrators print() their progress: keep it out of the user's table
    with contextlib.redirect_stdout(progress):
        _run_quantize_static(source, target, reader, config, method, extra)
    logger.debug("ORT calibration: %s", progress.getvalue().strip())
    if not count_qdq_quantized(onnx.load(str(target)), config.op_types):
        raise BuildError(f"the model has no {'/'.join(config.op_types)} nodes that could be quantized")


def _run_quantize_static(
    source: Path,
    target: Path,
    reader: CalibrationReader,
    config: QuantizeOrtStaticConfig,
    method: Any,
    extra: dict[str, Any],
) -> None:
    from onnxruntime.quantization import QuantFormat, quantize_static

    quantize_static(
        source,
        target,
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(config.op_types),
        per_channel=config.per_channel,
        reduce_range=config.reduce_range,
        activation_type=_quant_type(config.activation_type),
        weight_type=_quant_type(config.weight_type),
        calibrate_method=method,
        extra_options=extra,
    )


def count_qdq_quantized(model: onnx.ModelProto, op_types: tuple[str, ...]) -> int:
    """Nodes of ``op_types`` that read at least one DequantizeLinear output (quantized in QDQ form)."""
    dequantized = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return sum(node.op_type in op_types and any(i in dequantized for i in node.input) for node in model.graph.node)
