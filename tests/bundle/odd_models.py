"""Digits-shaped ONNX models that misbehave on purpose: one fails every run, one is slow.

Both take ``input`` FP32 [batch, 1, 8, 8] and return ``logits`` FP32 [batch, 10], so they drop in
where a bundle's artifact goes (a bad optimization, as the fallback and the canary meet it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_INPUT = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])
_OUTPUT = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def failing_model(path: Path) -> Path:
    """Indexes a 10-row table with 1000 x the image's brightest pixel: any real digit (pixels up to 1.0)
    is out of range, so every run raises in ONNX Runtime."""
    nodes = [
        helper.make_node("ReduceMax", ["input"], ["peak"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["peak", "scale"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "index"], ["logits"], axis=0),
    ]
    weights = [
        numpy_helper.from_array(np.zeros((10, 10), dtype=np.float32), "table"),
        numpy_helper.from_array(np.array(1000.0, dtype=np.float32), "scale"),
    ]
    return _save(helper.make_graph(nodes, "failing", [_INPUT], [_OUTPUT], initializer=weights), path)


def slow_model(path: Path, layers: int = 24, width: int = 2048) -> Path:
    """``layers`` square MatMuls of ``width`` (one shared weight): tens of ms per row on one thread."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Reshape", ["input", "flat"], ["h0"]), helper.make_node("MatMul", ["h0", "w_in"], ["h1"])]
    for index in range(1, layers + 1):
        nodes.append(helper.make_node("MatMul", [f"h{index}", "w"], [f"h{index + 1}"]))
    nodes.append(helper.make_node("MatMul", [f"h{layers + 1}", "w_out"], ["logits"]))
    weights = [
        numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "flat"),
        numpy_helper.from_array(rng.standard_normal((64, width)).astype(np.float32) * 0.01, "w_in"),
        numpy_helper.from_array(np.eye(width, dtype=np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((width, 10)).astype(np.float32) * 0.01, "w_out"),
    ]
    return _save(helper.make_graph(nodes, "slow", [_INPUT], [_OUTPUT], initializer=weights), path)
