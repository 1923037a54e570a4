"""Torch-side precision steps: ``quantize.torch_dynamic`` (int8 Linear layers) and ``quantize.fp16``
(float16 / bfloat16 for torch and ONNX artifacts, with a check that the hardware runs it fast)."""

from __future__ import annotations

import fnmatch
import logging
import platform
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from serving_harness.config import RuntimeSettings
from serving_harness.runtimes.base import TensorSpec
from serving_harness.runtimes.onnxruntime import OnnxRuntime
from workbench.artifact import Artifact
from workbench.errors import BuildError, MissingDependencyError
from workbench.host import cpu_flags
from workbench.steps.base import ONNX_FILE, STEPS, StepConfig, StepContext, expect_config
from workbench.steps.export.torch import (
    MODEL_DIR,
    TORCHSCRIPT_FILE,
    check_parity,
    load_eager,
    max_abs_diff,
    quiet_torch,
    sample_tensors,
    save_torchscript,
    trace_module,
)
from workbench.steps.quantize.ort import needs_reduced_range

logger = logging.getLogger(__name__)

DYNAMIC_LINEAR_OP = "quantized::linear_dynamic"
# ISA flags (as /proc/cpuinfo spells them) that give a CPU native arithmetic in each type, by family.
NATIVE_ISA: dict[str, dict[str, tuple[str, ...]]] = {
    "x86": {"float16": ("avx512_fp16", "amx_fp16"), "bfloat16": ("avx512_bf16", "amx_bf16")},
    "arm": {"float16": ("asimdhp",), "bfloat16": ("bf16",)},
}
ReduceRange = Literal["none", "weights", "activations"]


class QuantizeTorchDynamicConfig(StepConfig):
    """``quantize.torch_dynamic`` settings.

    Example::

        - quantize.torch_dynamic: {per_channel: true, skip: ["*.intermediate.dense"]}
    """

    per_channel: bool = Field(default=True, description="One weight scale per output channel instead of per tensor.")
    reduce_range: ReduceRange | Literal["auto"] = Field(
        default="auto",
        validate_default=True,
        description="Which side gets 7 bits so u8×s8 kernels cannot saturate on x86 without VNNI: 'weights' "
        "(as ORT does), 'activations' (torch's default), or 'none'. 'auto': 'weights' on such CPUs, else 'none'. "
        "Measured on MiniLM here (AVX2 EPYC): cosine 0.992 with 'weights', 0.977 with 'activations'.",
    )
    skip: tuple[str, ...] = Field(default=(), description="fnmatch patterns of Linear module names left in fp32.")

    @field_validator("reduce_range")
    @classmethod
    def _resolve_auto(cls, value: str) -> str:
        # Resolved here so the build cache key holds the value actually used on this machine.
        if value != "auto":
            return value
        return "weights" if needs_reduced_range() else "none"


class _FullRangeDynamicLinear(torch.ao.nn.quantized.dynamic.Linear):
    """torch's dynamic int8 Linear with 8-bit activations (the stock one always quantizes them to 7 bits)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = self._packed_params._packed_params
        result: torch.Tensor = torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False)
        return result.to(x.dtype)


@STEPS.register("quantize.torch_dynamic")
class QuantizeTorchDynamic:
    """Dynamic int8 quantization of a torch factory artifact's ``nn.Linear`` layers (``torch.ao``): weights
    int8 ahead of time, activations quantized per batch at run time.

    The artifact is the quantized module traced and frozen as TorchScript (``model.json`` + ``model.pt``),
    so it loads with ``torch.jit.load`` and no pickled objects. The packed weights belong to the quantized
    engine that built them (``x86``/fbgemm here), so serve it on the same CPU family. Figures:
    ``quantize_s``, ``quantized_ops`` (``quantized::linear_dynamic`` calls in the saved graph),
    ``size_ratio`` (new bytes / old bytes), ``quantize_max_abs_diff`` (on the sample batches).
    """

    name: ClassVar[str] = "quantize.torch_dynamic"
    Config: ClassVar[type[StepConfig]] = QuantizeTorchDynamicConfig

    def apply(self, artifact: Artifact, config: StepConfig, workdir: Path, context: StepContext) -> Artifact:
        """Write ``workdir/model/`` (``model.json``, ``model.pt``)."""
        config = expect_config(self.name, config, QuantizeTorchDynamicConfig)
        model = load_eager(self.name, artifact)
        reference = load_eager(self.name, artifact)  # quantize_dynamic below changes the module in place
        samples = sample_tensors(model.inputs, context)
        started = time.perf_counter()
        quantized = quantize_linear_layers(model.module, config)
        directory = workdir / MODEL_DIR
        directory.mkdir(parents=True)
        save_torchscript(trace_module(quantized, samples, freeze=True), directory, model.inputs, model.outputs)
        quantize_s = time.perf_counter() - started
        diff = check_parity(directory, reference, samples, tolerance=None, what=self.name)
        figures = {
            "quantize_s": round(quantize_s, 3),
            "quantized_ops": float(count_dynamic_linear_ops(directory / TORCHSCRIPT_FILE)),
            "size_ratio": round(Artifact(path=directory, format="torchscript").size_bytes / artifact.size_bytes, 4),
            "quantize_max_abs_diff": diff,
        }
        return Artifact(path=directory, format="torchscript", figures=figures)


def quantize_linear_layers(module: nn.Module, config: QuantizeTorchDynamicConfig) -> nn.Module:
    """``module`` with every Linear not matched by ``config.skip`` replaced by a dynamic int8 one (in place)."""
    names = [
        name
        for name, child in module.named_modules()
        if isinstance(child, nn.Linear) and not any(fnmatch.fnmatchcase(name, p) for p in config.skip)
    ]
    if not names:
        raise BuildError("the model has no nn.Linear layers to quantize (after skip)")
    qconfig = _qconfig(per_channel=config.per_channel, seven_bit_weights=config.reduce_range == "weights")
    with quiet_torch():
        quantized: nn.Module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            module, dict.fromkeys(names, qconfig), dtype=torch.qint8
        )
    if config.reduce_range != "activations":
        for child in quantized.modules():
            if type(child) is torch.ao.nn.quantized.dynamic.Linear:
                child.__class__ = _FullRangeDynamicLinear
    return quantized


def _qconfig(*, per_channel: bool, seven_bit_weights: bool) -> Any:
    from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver, PlaceholderObserver, QConfig

    low, high = (-64, 63) if seven_bit_weights else (-128, 127)
    observer: Any = PerChannelMinMaxObserver if per_channel else MinMaxObserver
    scheme = torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric
    weight = observer.with_args(dtype=torch.qint8, qscheme=scheme, quant_min=low, quant_max=high)
    activation = PlaceholderObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True)
    return QConfig(activation=activation, weight=weight)  # type: ignore[no-untyped-call]


def count_dynamic_linear_ops(path: Path) -> int:
    """How many ``quantized::linear_dynamic`` calls a saved TorchScript graph makes."""
    with quiet_torch():
        loaded = torch.jit.load(str(path))  # type: ignore[no-untyped-call]
    return len(loaded.graph.findAllNodes(DYNAMIC_LINEAR_OP, recurse=True))


class QuantizeFp16Config(StepConfig):
    """``quantize.fp16`` settings.

    On a CPU without native ``dtype`` arithmetic the step refuses, because the result runs slower than
    float32 there; ``allow_slow: true`` builds it anyway (to measure it), ``device: cuda`` builds it for a GPU.
    Example::

        - quantize.fp16: {dtype: bfloat16, device: cpu}
    """

    dtype: Literal["float16", "bfloat16"] = "float16"
    keep_io_types: bool = Field(default=True, description="Inputs and outputs stay float32; the casts are inside.")
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="Where the artifact will run.")
    allow_slow: bool = Field(default=False, description="Build for a CPU that lacks native support anyway.")

    @model_validator(mode="after")
    def _bfloat16_keeps_io(self) -> QuantizeFp16Config:
        if self.dtype == "bfloat16" and not self.keep_io_types:
            raise ValueError("bfloat16 needs keep_io_types: true (numpy and the OIP protocol have no bfloat16)")
        return self


@STEPS.register("quantize.fp16")
class QuantizeFp16:
    """Half precision: float16 or bfloat16 weights and arithmetic.

    - An ONNX artifact is converted to float16 with ``onnxruntime.transformers.float16`` (bundled with
      onnxruntime: the same converter as onnxconverter-common); bfloat16 is refused for ONNX.
    - A torch factory artifact is cast and traced (with the input/output casts when ``keep_io_types``)
      into a frozen TorchScript directory.

    Measured on an AVX2 EPYC without avx512_fp16/avx512_bf16/amx (batch 32, one run): torch float16 and
    bfloat16 ran 16x and 12x slower than float32 on the digits CNN; ONNX Runtime's CPU provider puts casts
    around the float16 nodes it has no kernel for and computes in float32, so float16 ONNX ran at the speed
    of float32 (0.98x on MiniLM, 0.99x on digits) with half the file. Hence with ``device: cpu`` the step
    needs a flag from ``NATIVE_ISA`` or ``allow_slow: true``. Figures: ``convert_s``, ``size_ratio``,
    ``cast_max_abs_diff`` (on the sample batches, ``device: cpu`` only).
    """

    name: ClassVar[str] = "quantize.fp16"
    Config: ClassVar[type[StepConfig]] = QuantizeFp16Config

    def apply(self, artifact: Artifact, config: StepConfig, workdir: Path, context: StepContext) -> Artifact:
        """Write ``workdir/model.onnx`` (ONNX in) or ``workdir/model/`` (torch in)."""
        config = expect_config(self.name, config, QuantizeFp16Config)
        if artifact.format not in {"onnx", "torch"}:
            raise BuildError(f"{self.name} takes an ONNX or torch factory artifact, not {artifact.format!r}")
        if artifact.format == "onnx" and config.dtype == "bfloat16":
            raise BuildError(f"{self.name}: ONNX conversion supports float16 only; use bfloat16 on a torch artifact")
        if config.device == "cpu" and not config.allow_slow:
            require_native_isa(config.dtype, artifact.format)
        started = time.perf_counter()
        if artifact.format == "onnx":
            made, diff = _onnx_half(artifact, config, workdir, context)
        else:
            made, diff = _torch_half(artifact, config, workdir, context)
        figures = {
            "convert_s": round(time.perf_counter() - started, 3),
            "size_ratio": round(made.size_bytes / artifact.size_bytes, 4),
        }
        if diff is not None:
            figures["cast_max_abs_diff"] = diff
        return Artifact(path=made.path, format=made.format, figures=figures)


def require_native_isa(dtype: str, artifact_format: str = "torch") -> None:
    """MissingDependencyError unless this CPU has native ``dtype`` arithmetic (or is not one we can read)."""
    machine = platform.machine().lower()
    family = "arm" if machine in {"arm64", "aarch64"} else "x86"
    wanted = NATIVE_ISA[family][dtype]
    flags = cpu_flags()
    if not flags or flags & set(wanted):
        return
    consequence = (
        "ONNX Runtime would compute it in float32 behind casts (no speed-up)"
        if artifact_format == "onnx"
        else f"{dtype} runs slower than float32 here"
    )
    raise MissingDependencyError(
        f"quantize.fp16: this CPU ({machine}) lacks {'/'.join(wanted)}, so {consequence}; "
        "build it for a GPU (device: cuda) or set allow_slow: true to measure it anyway"
    )


def _onnx_half(
    artifact: Artifact, config: QuantizeFp16Config, workdir: Path, context: StepContext
) -> tuple[Artifact, float | None]:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / ONNX_FILE
    converted = convert_float_to_float16(onnx.load(str(artifact.path)), keep_io_types=config.keep_io_types)
    onnx.save(converted, str(path), save_as_external_data=False)
    made = Artifact(path=path, format="onnx")
    diff = _onnx_diff(artifact.path, path, context) if config.device == "cpu" else None
    return made, diff


def _onnx_diff(source: Path, converted: Path, context: StepContext) -> float:
    """Largest output difference between the two ONNX files on the sample batch (ORT CPU)."""
    expected, actual = OnnxRuntime(), OnnxRuntime()
    settings = RuntimeSettings(intra_op_threads=0)
    expected.load(source, settings)
    declared = actual.load(converted, settings).inputs
    feeds = {spec.name: np.asarray(context.sample_inputs[spec.name]).astype(spec.numpy_dtype) for spec in declared}
    want = expected.infer({name: np.asarray(value) for name, value in context.sample_inputs.items()})
    return round(max_abs_diff(actual.infer(feeds), want), 8)


def _torch_half(
    artifact: Artifact, config: QuantizeFp16Config, workdir: Path, context: StepContext
) -> tuple[Artifact, float | None]:
    model = load_eager(QuantizeFp16.name, artifact)
    reference = load_eager(QuantizeFp16.name, artifact)
    samples = sample_tensors(model.inputs, context)
    dtype = getattr(torch, config.dtype)
    wrapped = CastIO(model.module.to(dtype), dtype, keep_io_types=config.keep_io_types)
    directory = workdir / MODEL_DIR
    directory.mkdir(parents=True)
    inputs, outputs = model.inputs, model.outputs
    if not config.keep_io_types:
        inputs, outputs = _as_fp16(inputs), _as_fp16(outputs)
    save_torchscript(trace_module(wrapped, samples, freeze=True), directory, inputs, outputs)
    diff = check_parity(directory, reference, samples, tolerance=None, what=QuantizeFp16.name)
    return Artifact(path=directory, format="torchscript"), (diff if config.device == "cpu" else None)


def _as_fp16(specs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    return tuple(s.model_copy(update={"datatype": "FP16"}) if s.datatype == "FP32" else s for s in specs)


class CastIO(nn.Module):
    """Runs ``inner`` in ``dtype``: floating inputs are cast to it; with ``keep_io_types`` floating
    outputs are cast back to float32, so callers see the model's original interface."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype, *, keep_io_types: bool) -> None:
        super().__init__()
        self.inner = inner
        self.dtype = dtype
        self.keep_io_types = keep_io_types

    def forward(self, *inputs: torch.Tensor) -> Any:
        cast = [x.to(self.dtype) if x.is_floating_point() else x for x in inputs]
        result = self.inner(*cast)
        return _to_float32(result) if self.keep_io_types else result


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {key: _to_float32(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return type(value)(_to_float32(item) for item in value)
    return value
