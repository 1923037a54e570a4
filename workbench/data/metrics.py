"""Metrics (top-1 accuracy, cosine fidelity, custom callables) and per-output numeric comparison.

A metric reads one output of the model, named in the recipe (``metric: {name: accuracy, output: label}``)
or chosen from the source model's outputs when the run starts (``resolve_metric(spec, outputs, labels)``):

- ``accuracy``: the first integer output shaped like the labels (predicted labels, as a converter's
  ``label`` output); else the first float output shaped like the labels plus a class axis (scores: its
  arg-max is the prediction); else the first float output (arg-max over its last axis).
- ``cosine``: the first float output (an embedding, logits).
- a ``pkg.module:function``: every output, or only the named one when ``output`` is given.

The chosen output is ``Metric.output``; the report records it. ``reference`` is the fp32 source model's
outputs on the same samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Literal

import numpy as np

from workbench.data.base import METRICS, Arrays, Metric
from workbench.errors import MeasurementError, UsageError
from workbench.recipe.spec import MetricSpec
from workbench.registry import import_callable

__all__ = ["compare_outputs", "cosine_similarity", "resolve_metric", "top1_accuracy"]

OutputKind = Literal["labels", "scores"]


def _first(outputs: Arrays, what: str) -> np.ndarray:
    if not outputs:
        raise MeasurementError(f"{what}: the model returned no outputs")
    return np.asarray(next(iter(outputs.values())))


def _read(outputs: Arrays, name: str | None, what: str) -> np.ndarray:
    """The output ``name`` (the first one when None), or a MeasurementError naming what there is."""
    if name is None:
        return _first(outputs, what)
    if name not in outputs:
        raise MeasurementError(f"{what}: the model has no output {name!r} (it has {', '.join(outputs) or 'none'})")
    return np.asarray(outputs[name])


def _is_integer(array: np.ndarray) -> bool:
    return bool(np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_)


def _predictions(array: np.ndarray, kind: OutputKind | None) -> np.ndarray:
    """Predicted labels: the output itself when it holds labels, else its arg-max over the last axis."""
    holds = kind or ("labels" if _is_integer(array) else "scores")
    return array if holds == "labels" else array.argmax(axis=-1)


def accuracy_of(
    output: str | None, kind: OutputKind | None = None
) -> Callable[[Arrays, Arrays, np.ndarray | None], float]:
    """The accuracy score reading ``output`` (the first output when None) as ``kind``."""

    def score(outputs: Arrays, reference: Arrays, labels: np.ndarray | None) -> float:
        if labels is None:
            raise UsageError("metric 'accuracy' needs labels and this dataset has none; use metric: cosine")
        predicted = _predictions(_read(outputs, output, "accuracy"), kind)
        if predicted.shape != labels.shape:
            where = f"output {output!r}" if output else "the first output"
            raise MeasurementError(
                f"accuracy: predictions {predicted.shape} from {where} do not match labels {labels.shape}; "
                f"name the output to score with data.metric: {{name: accuracy, output: NAME}}"
            )
        return float(np.mean(predicted == labels))

    return score


def top1_accuracy(outputs: Arrays, reference: Arrays, labels: np.ndarray | None) -> float:
    """Share of samples whose arg-max over the last axis of the first output equals the label."""
    return accuracy_of(None, "scores")(outputs, reference, labels)


def cosine_of(output: str | None) -> Callable[[Arrays, Arrays, np.ndarray | None], float]:
    """Mean row-wise cosine similarity of ``output`` (the first when None) to the reference's same output."""

    def score(outputs: Arrays, reference: Arrays, labels: np.ndarray | None) -> float:
        ours, theirs = _read(outputs, output, "cosine"), _read(reference, output, "cosine")
        if ours.shape != theirs.shape:
            raise MeasurementError(f"cosine: output shape {ours.shape} differs from the reference's {theirs.shape}")
        a = ours.reshape(len(ours), -1).astype(np.float64)
        b = theirs.reshape(len(theirs), -1).astype(np.float64)
        norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        return float(np.mean(np.sum(a * b, axis=1) / norms))

    return score


def cosine_similarity(outputs: Arrays, reference: Arrays, labels: np.ndarray | None) -> float:
    """Mean row-wise cosine similarity of the first output to the reference's first output."""
    return cosine_of(None)(outputs, reference, labels)


METRICS.register("accuracy")(Metric(name="accuracy", higher_is_better=True, score=top1_accuracy))
METRICS.register("cosine")(Metric(name="cosine", higher_is_better=True, score=cosine_similarity))


def resolve_metric(spec: str | MetricSpec, outputs: Arrays | None = None, labels: np.ndarray | None = None) -> Metric:
    """The metric a recipe names, reading the output it names or, given the source's ``outputs``, the one
    that fits (see the module docstring); ``Metric.output`` says which.

    A registered name, or a ``pkg.module:function`` scoring ``(outputs, reference, labels)``; a custom
    function counts as higher-is-better unless it has ``higher_is_better = False``.
    """
    spec = MetricSpec(name=spec) if isinstance(spec, str) else spec
    if spec.output is not None and outputs is not None and spec.output not in outputs:
        raise UsageError(f"data.metric.output {spec.output!r}: the model has no such output ({', '.join(outputs)})")
    if ":" in spec.name:
        return _custom(spec)
    metric = METRICS.get(spec.name)
    output = spec.output or (choose_output(spec.name, outputs, labels) if outputs else None)
    if spec.name == "accuracy" and metric.score is top1_accuracy:
        return replace(metric, score=accuracy_of(output, spec.kind), output=output)
    if spec.name == "cosine" and metric.score is cosine_similarity:
        return replace(metric, score=cosine_of(output), output=output)
    return replace(metric, output=spec.output)  # a plugin metric reads what it reads


def choose_output(metric: str, outputs: Arrays, labels: np.ndarray | None) -> str | None:
    """The output ``metric`` scores when the recipe names none: see the module docstring."""
    floats = [name for name, array in outputs.items() if np.issubdtype(np.asarray(array).dtype, np.floating)]
    if metric != "accuracy":
        return next(iter(floats), next(iter(outputs), None))
    shape = None if labels is None else labels.shape
    for name, array in outputs.items():
        array = np.asarray(array)
        if _is_integer(array) and array.ndim >= 1 and (array.shape == shape or (shape is None and array.ndim == 1)):
            return name
    for name in floats:
        array = np.asarray(outputs[name])
        if array.ndim >= 2 and (array.shape[:-1] == shape or (shape is None and array.ndim == 2)):
            return name
    return next(iter(floats), next(iter(outputs), None))


def _custom(spec: MetricSpec) -> Metric:
    try:
        function = import_callable(spec.name)
    except UsageError as exc:
        raise UsageError(f"data.metric: {exc}") from None
    if not callable(function):
        raise UsageError(f"data.metric {spec.name!r} is not callable")
    output = spec.output

    def score(outputs: Arrays, reference: Arrays, labels: np.ndarray | None) -> float:
        if output is not None:  # the named output only: what the recipe says the metric reads
            outputs = {output: _read(outputs, output, spec.name)}
            reference = {output: _read(reference, output, spec.name)}
        return float(function(outputs, reference, labels))

    return Metric(
        name=spec.name.rpartition(":")[2],
        higher_is_better=bool(getattr(function, "higher_is_better", True)),
        score=score,
        output=output,
    )


def compare_outputs(outputs: Arrays, reference: Arrays) -> dict[str, dict[str, float]]:
    """Per reference output: ``max_abs_diff``, ``max_rel_diff`` and ``nonfinite``; ``mismatches`` too
    for integer, boolean and string outputs, which are compared exactly.

    ``max_rel_diff`` is ``max_abs_diff`` divided by the reference's largest magnitude for that
    output (so 1e-3 means "errors reach a thousandth of the output's range"); it stays meaningful
    where reference values pass through zero, unlike an element-wise ratio. ``nonfinite`` counts
    NaN and Inf values in ``outputs``; the differences are taken over the finite positions only.
    An exact output (labels, ids) has no tolerance: one label that differs is a ``mismatch``, and its
    ``max_abs_diff`` is taken in integers (no rounding through float64), so a bound on it catches it.
    """
    return {name: _compare(name, outputs, expected) for name, expected in reference.items()}


def _compare(name: str, outputs: Arrays, expected: np.ndarray) -> dict[str, float]:
    if name not in outputs:
        raise MeasurementError(f"output {name!r} is missing (the model returned {', '.join(outputs) or 'nothing'})")
    actual, wanted = np.asarray(outputs[name]), np.asarray(expected)
    if actual.shape != wanted.shape:
        raise MeasurementError(f"output {name!r} has shape {actual.shape}, the reference {wanted.shape}")
    if _exact(actual) or _exact(wanted):
        return _compare_exact(actual, wanted)
    actual, wanted = actual.astype(np.float64), wanted.astype(np.float64)
    finite = np.isfinite(actual) & np.isfinite(wanted)
    diff = np.abs(actual - wanted)[finite]
    max_abs = float(diff.max()) if diff.size else 0.0
    peak = float(np.abs(wanted[finite]).max()) if diff.size else 0.0
    return {
        "max_abs_diff": max_abs,
        "max_rel_diff": max_abs / max(peak, 1e-12),
        "nonfinite": float(np.count_nonzero(~np.isfinite(actual))),
    }


def _exact(array: np.ndarray) -> bool:
    return not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.complexfloating)


def _compare_exact(actual: np.ndarray, wanted: np.ndarray) -> dict[str, float]:
    """Integer, boolean or string outputs: equal or not, element by element."""
    mismatches = int(np.count_nonzero(actual != wanted))
    if _is_integer(actual) and _is_integer(wanted):
        # Python ints over the differing elements: no int64 overflow, no float64 rounding of large ids.
        differing = actual != wanted
        pairs = zip(actual[differing].tolist(), wanted[differing].tolist(), strict=True)
        diff = max((abs(int(a) - int(b)) for a, b in pairs), default=0)
        peak = max(abs(int(wanted.max())), abs(int(wanted.min()))) if wanted.size else 0
    else:  # strings or mixed: no distance, only "differs"
        diff, peak = int(mismatches > 0), 1
    return {
        "max_abs_diff": float(diff),
        "max_rel_diff": float(diff) / max(float(peak), 1e-12),
        "nonfinite": 0.0,
        "mismatches": float(mismatches),
    }
