"""Issue 17's shortcuts in the JSON request decoder: a request that carries inputs only skips the optional
fields' checks, and float data for a float input is checked before anything else. Each shortcut must decide
exactly as the full checks did, so these requests go through both sides of each."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from serving_harness.errors import InvalidRequest
from serving_harness.model import Answer
from serving_harness.protocol.codec import ModelSchema, RequestedOutput, decode_infer_request
from serving_harness.runtimes.base import ModelMetadata, TensorSpec


def _schema(datatype: str) -> ModelSchema:
    tensor = TensorSpec(name="x", datatype=datatype, shape=(-1, -1))
    output = TensorSpec(name="y", datatype=datatype, shape=(-1, 2))
    return ModelSchema(ModelMetadata(platform="test", inputs=(tensor,), outputs=(output,)))


def _decode(data: Any, datatype: str = "FP32", shape: list[int] | None = None, **fields: Any) -> Any:
    tensor = {"name": "x", "datatype": datatype, "shape": shape or [1, 2], "data": data}
    return decode_infer_request(orjson.dumps({"inputs": [tensor], **fields}), None, _schema(datatype))


def test_a_request_with_inputs_only_gets_the_defaults() -> None:
    request = _decode([1.5, 2.5])

    np.testing.assert_array_equal(request.inputs["x"], np.array([[1.5, 2.5]], np.float32))
    assert request.inputs["x"].dtype == np.float32
    assert (request.rows, request.id, request.outputs, request.binary_output, request.parameters) == (
        1,
        None,
        None,
        False,
        None,
    )
    assert request.nonfinite_inputs == 0


def test_the_optional_fields_are_still_read_and_checked() -> None:
    request = _decode(
        [1.0, 2.0], id="r1", parameters={"binary_data_output": True}, outputs=[{"name": "y"}], model_name="m"
    )

    assert (request.id, request.binary_output, request.parameters) == ("r1", True, {"binary_data_output": True})
    assert request.outputs == (RequestedOutput("y", True),)
    refused: list[tuple[dict[str, Any], str]] = [
        ({"id": 7}, "'id' must be a string"),
        ({"outputs": {}}, "'outputs' must be a list"),
        ({"parameters": []}, "'parameters' of the request"),
        ({"outputs": [{"name": "z"}]}, "unknown output 'z'"),
    ]
    for fields, message in refused:
        with pytest.raises(InvalidRequest, match=message):
            _decode([1.0, 2.0], **fields)


@pytest.mark.parametrize(
    ("data", "datatype", "expected"),
    [
        ([1.5, -2.0], "FP64", np.array([[1.5, -2.0]])),
        ([1, 2], "FP32", np.array([[1.0, 2.0]], np.float32)),  # integers for a float input
        ([3.0e38, -3.0e38], "FP32", np.array([[3.0e38, -3.0e38]], np.float32)),  # the edge of the range
        ([1.0, 2], "FP16", np.array([[1.0, 2.0]], np.float16)),
        ([1.0, "NaN"], "FP32", np.array([[1.0, np.nan]], np.float32)),
    ],
)
def test_numbers_for_a_float_input_keep_their_values(data: list[Any], datatype: str, expected: np.ndarray) -> None:
    decoded = _decode(data, datatype).inputs["x"]

    assert decoded.dtype == expected.dtype
    np.testing.assert_array_equal(decoded, expected)


@pytest.mark.parametrize(
    ("data", "datatype", "message"),
    [
        ([1.0e39, 1.0], "FP32", "outside the range of FP32"),
        ([7.0e4, 1.0], "FP16", "outside the range of FP16"),
        ([True, False], "FP32", "holds bool values"),
        ([1.0, 2.0, 3.0], "FP32", "has 3 elements"),
    ],
)
def test_float_data_the_old_checks_refused_is_refused(data: list[Any], datatype: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        _decode(data, datatype)


def test_an_empty_float_tensor_decodes() -> None:
    decoded = _decode([], shape=[1, 0]).inputs["x"]

    assert decoded.shape == (1, 0) and decoded.dtype == np.float32


def test_an_answer_cannot_be_changed() -> None:
    answer = Answer({}, 0.0, 0.001, frozenset())

    with pytest.raises(AttributeError):
        answer.queue_s = 1.0  # type: ignore[misc]
    assert (answer.queue_s, answer.compute_s) == (0.0, 0.001)
