"""Export steps: a torch factory artifact → one self-contained ``.onnx`` file."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import torch
from pydantic import Field

from workbench.artifact import Artifact
from workbench.errors import BuildError
from workbench.models.torch_source import TorchModel, load_torch_model
from workbench.steps.base import ONNX_FILE, STEPS, StepConfig, StepContext, expect_config

logger = logging.getLogger(__name__)


class ExportOnnxConfig(StepConfig):
    """``export.onnx`` settings.

    Example::

        - export.onnx: {opset: 18, dynamo: true}
    """

    opset: int = Field(default=18, ge=13, le=23, description="ONNX opset to target.")
    dynamo: bool = Field(default=True, description="torch.export-based exporter; false = legacy TorchScript one.")


@STEPS.register("export.onnx")
class ExportOnnx:
    """Export a torch factory artifact to a single ``.onnx`` file with the source's dynamic axes.

    Input and output names come from the artifact's ``model.json``. The file holds its weights
    (no external ``.data`` file); the step checks it with ``onnx.checker`` and records how far
    ONNX Runtime's outputs on the sample batch are from torch's (``export_max_abs_diff``).
    """

    name: ClassVar[str] = "export.onnx"
    Config: ClassVar[type[StepConfig]] = ExportOnnxConfig

    def apply(self, artifact: Artifact, config: StepConfig, workdir: Path, context: StepContext) -> Artifact:
        """Write ``workdir/model.onnx``."""
        config = expect_config(self.name, config, ExportOnnxConfig)
        if artifact.format != "torch":
            raise BuildError(f"{self.name} exports torch factory artifacts, not {artifact.format!r}")
        model = load_torch_model(artifact.path)
        samples = _sample_tensors(model, context)
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / ONNX_FILE
        started = time.perf_counter()
        _export(model, samples, path, config, context.dynamic_axes)
        export_s = time.perf_counter() - started
        _finish_onnx(path, model, context.dynamic_axes)
        figures = {"export_s": round(export_s, 3), "export_max_abs_diff": _parity(model, samples, path)}
        return Artifact(path=path, format="onnx", figures=figures)


def _sample_tensors(model: TorchModel, context: StepContext) -> tuple[torch.Tensor, ...]:
    missing = [spec.name for spec in model.inputs if spec.name not in context.sample_inputs]
    if missing:
        raise BuildError(f"the sample inputs lack {', '.join(missing)}")
    return tuple(torch.from_numpy(np.ascontiguousarray(context.sample_inputs[s.name])) for s in model.inputs)


def _export(
    model: TorchModel,
    samples: tuple[torch.Tensor, ...],
    path: Path,
    config: ExportOnnxConfig,
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    input_names = [spec.name for spec in model.inputs]
    output_names = [_placeholder(index) for index in range(len(model.outputs))]
    common: dict[str, Any] = {"input_names": input_names, "output_names": output_names}
    if config.dynamo:
        # Dim.DYNAMIC lets torch.export infer each axis's range; the axes get their names afterwards.
        shapes = tuple(dict.fromkeys(dynamic_axes.get(n, {}), torch.export.Dim.DYNAMIC) for n in input_names)
        common |= {"dynamic_shapes": shapes, "external_data": False, "dynamo": True, "verbose": False}
    else:
        axes = {n: dynamic_axes[n] for n in input_names if n in dynamic_axes}
        axes |= {_placeholder(i): dynamic_axes[s.name] for i, s in enumerate(model.outputs) if s.name in dynamic_axes}
        common |= {"dynamic_axes": axes, "dynamo": False}
    try:
        with _quiet_exporter():
            torch.onnx.export(model.module, samples, str(path), opset_version=config.opset, **common)
    except Exception as exc:
        hint = " (try export.onnx: {dynamo: false})" if config.dynamo else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BuildError(f"torch.onnx.export failed{hint}: {type(exc).__name__}: {first}") from exc


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide the exporter's notices that say nothing about this model (torchvision ops, deprecations)."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        registration.setLevel(level)


def _finish_onnx(path: Path, model: TorchModel, dynamic_axes: dict[str, dict[int, str]]) -> None:
    """Name the dynamic axes, insist on a single file, and run the ONNX checker."""
    stray = sorted(p.name for p in path.parent.iterdir() if p != path)
    proto = onnx.load(str(path), load_external_data=True)
    if stray or _has_external_data(proto):
        logger.debug("folding external data %s into %s", stray, path.name)
        for name in stray:
            (path.parent / name).unlink()
    for index, spec in enumerate(model.outputs):
        _claim_name(proto.graph, _placeholder(index), spec.name)
    specs = {spec.name: spec for spec in (*model.inputs, *model.outputs)}
    for value in (*proto.graph.input, *proto.graph.output):
        if value.name in specs:
            _set_dims(value, specs[value.name].shape, dynamic_axes.get(value.name, {}))
    onnx.save(proto, str(path), save_as_external_data=False)
    try:
        onnx.checker.check_model(str(path), full_check=False)
    except onnx.checker.ValidationError as exc:
        raise BuildError(f"the exported model fails onnx.checker: {str(exc).splitlines()[0]}") from exc


def _set_dims(value: onnx.ValueInfoProto, shape: tuple[int, ...], names: dict[int, str]) -> None:
    """Make a graph input's or output's shape the declared one: fixed sizes, named dynamic axes."""
    dims = value.type.tensor_type.shape.dim
    if len(dims) != len(shape):
        return
    for axis, (dim, size) in enumerate(zip(dims, shape, strict=True)):
        if size >= 0:
            dim.dim_value = size
        else:
            dim.dim_param = names.get(axis, f"{value.name}_dim{axis}")


def _placeholder(index: int) -> str:
    """Outputs are exported under these names, then renamed: the dynamo exporter can give an
    intermediate value the same name as an output (MiniLM's ``embedding``), which breaks SSA."""
    return f"workbench_output_{index}"


def _claim_name(graph: onnx.GraphProto, current: str, wanted: str) -> None:
    """Rename value ``current`` to ``wanted``, first moving any other value called ``wanted`` aside."""
    if any(wanted in node.output for node in graph.node):
        _rename_value(graph, wanted, f"{wanted}_inner")
    _rename_value(graph, current, wanted)


def _rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in (*graph.output, *graph.value_info):
        if value.name == old:
            value.name = new


def _has_external_data(proto: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def _parity(model: TorchModel, samples: tuple[torch.Tensor, ...], path: Path) -> float:
    """Largest absolute difference between torch and ONNX Runtime on the sample batch."""
    import onnxruntime as ort

    with torch.inference_mode():
        expected = model.module(*samples)
    if isinstance(expected, dict):
        expected = [expected[spec.name] for spec in model.outputs]
    expected_list = list(expected) if isinstance(expected, tuple | list) else [expected]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {spec.name: sample.numpy() for spec, sample in zip(model.inputs, samples, strict=True)}
    actual = session.run([spec.name for spec in model.outputs], feeds)
    diffs = [float(np.max(np.abs(a - e.numpy()))) for a, e in zip(actual, expected_list, strict=True) if a.size]
    return max(diffs, default=0.0)
