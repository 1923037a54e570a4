"""Metrics (top-1 accuracy, cosine fidelity, custom callables) and per-output numeric comparison.

Metrics score the *first* output of a model: the logits of a classifier, the embedding of an
encoder. ``reference`` is the fp32 source model's outputs on the same samples.
"""

from __future__ import annotations

import numpy as np

from workbench.data.base import METRICS, Arrays, Metric
from workbench.errors import MeasurementError, UsageError
from workbench.registry import import_callable

__all__ = ["compare_outputs", "cosine_similarity", "resolve_metric", "top1_accuracy"]


def _first(outputs: Arrays, what: str) -> np.ndarray:
    if not outputs:
        raise MeasurementError(f"{what}: the model returned no outputs")
    return np.asarray(next(iter(outputs.values())))


def top1_accuracy(outputs: Arrays, reference: Arrays, labels: np.ndarray | None) -> float:
    """Share of samples whose arg-max over the last axis of the first output equals the label."""
    if labels is None:
        raise UsageError("metric 'accuracy' needs labels and this dataset has none; use metric: cosine")
    predicted = _first(outputs, "accuracy").argmax(axis=-1)
    if predicted.shape != labels.shape:
        raise MeasurementError(f"accuracy: predictions {predicted.shape} do not match labels {labels.shape}")
    return float(np.mean(predicted == labels))


def cosine_similarity(outputs: Arrays, reference: Arrays, labels: np.ndarray | None) -> float:
    """Mean row-wise cosine similarity of the first output to the reference's first output."""
    ours, theirs = _first(outputs, "cosine"), _first(reference, "cosine")
    if ours.shape != theirs.shape:
        raise MeasurementError(f"cosine: output shape {ours.shape} differs from the reference's {theirs.shape}")
    a = ours.reshape(len(ours), -1).astype(np.float64)
    b = theirs.reshape(len(theirs), -1).astype(np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(np.mean(np.sum(a * b, axis=1) / norms))


METRICS.register("accuracy")(Metric(name="accuracy", higher_is_better=True, score=top1_accuracy))
METRICS.register("cosine")(Metric(name="cosine", higher_is_better=True, score=cosine_similarity))


def resolve_metric(name: str) -> Metric:
    """A registered metric by name, or a ``pkg.module:function`` scoring ``(outputs, reference, labels)``.

    A custom function counts as higher-is-better unless it has ``higher_is_better = False``.
    """
    if ":" not in name:
        return METRICS.get(name)
    try:
        function = import_callable(name)
    except UsageError as exc:
        raise UsageError(f"data.metric: {exc}") from None
    if not callable(function):
        raise UsageError(f"data.metric {name!r} is not callable")
    return Metric(
        name=name.rpartition(":")[2],
        higher_is_better=bool(getattr(function, "higher_is_better", True)),
        score=lambda outputs, reference, labels: float(function(outputs, reference, labels)),
    )


def compare_outputs(outputs: Arrays, reference: Arrays) -> dict[str, dict[str, float]]:
    """Per reference output: ``max_abs_diff``, ``max_rel_diff`` and ``nonfinite``.

    ``max_rel_diff`` is ``max_abs_diff`` divided by the reference's largest magnitude for that
    output (so 1e-3 means "errors reach a thousandth of the output's range"); it stays meaningful
    where reference values pass through zero, unlike an element-wise ratio. ``nonfinite`` counts
    NaN and Inf values in ``outputs``; the differences are taken over the finite positions only.
    """
    return {name: _compare(name, outputs, expected) for name, expected in reference.items()}


def _compare(name: str, outputs: Arrays, expected: np.ndarray) -> dict[str, float]:
    if name not in outputs:
        raise MeasurementError(f"output {name!r} is missing (the model returned {', '.join(outputs) or 'nothing'})")
    actual = np.asarray(outputs[name], dtype=np.float64)
    wanted = np.asarray(expected, dtype=np.float64)
    if actual.shape != wanted.shape:
        raise MeasurementError(f"output {name!r} has shape {actual.shape}, the reference {wanted.shape}")
    finite = np.isfinite(actual) & np.isfinite(wanted)
    diff = np.abs(actual - wanted)[finite]
    max_abs = float(diff.max()) if diff.size else 0.0
    peak = float(np.abs(wanted[finite]).max()) if diff.size else 0.0
    return {
        "max_abs_diff": max_abs,
        "max_rel_diff": max_abs / max(peak, 1e-12),
        "nonfinite": float(np.count_nonzero(~np.isfinite(actual))),
    }
