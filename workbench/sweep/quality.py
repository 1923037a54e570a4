"""Quality: run a variant on the evaluation set, score it against the fp32 source, apply the gate.

The gate runs before any timing: a variant that breaks a quality constraint is rejected and not
measured further.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from serving_harness.runtimes.base import Runtime
from workbench.data.base import Arrays, Dataset, Metric
from workbench.decide.select import violations
from workbench.metrics import QUALITY_METRICS
from workbench.recipe.spec import Bound
from workbench.report.schema import Quality


@dataclass(frozen=True)
class Reference:
    """The source model's outputs on the evaluation set and its own score."""

    dataset: Dataset
    outputs: Arrays
    metric: Metric
    baseline: float


def run_dataset(runtime: Runtime, dataset: Dataset, batch_size: int) -> Arrays:
    """Every output of ``runtime`` over the whole dataset, concatenated in order."""
    parts: dict[str, list[np.ndarray]] = {}
    for batch in dataset.batches(batch_size):
        for name, value in runtime.infer(batch).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def score(outputs: Arrays, reference: Reference, diffs: dict[str, dict[str, float]]) -> Quality:
    """The variant's metric on ``outputs`` against the source's baseline, with the per-output ``diffs``
    and the output the metric read."""
    value = reference.metric.score(outputs, reference.outputs, reference.dataset.labels)
    drop = reference.baseline - value if reference.metric.higher_is_better else value - reference.baseline
    drop_rel = drop / abs(reference.baseline) if reference.baseline else 0.0
    return Quality(
        metric=reference.metric.name,
        value=float(value),
        baseline=float(reference.baseline),
        drop=round(float(drop), 6),
        drop_rel=round(float(drop_rel), 6),
        outputs=diffs,
        output=reference.metric.output,
    )


def quality_check(quality: Quality, constraints: dict[str, Bound]) -> str | None:
    """Why the variant is rejected on quality, or None if it passes."""
    nonfinite = sum(int(d.get("nonfinite", 0)) for d in quality.outputs.values())
    if nonfinite:
        return f"{nonfinite} NaN/Inf values in the outputs"
    figures: dict[str, Any] = {
        "accuracy": quality.value,
        quality.metric: quality.value,
        "accuracy_drop": quality.drop,
        "accuracy_drop_rel": quality.drop_rel,
        # Every output counts, exact ones (labels, ids) too: one changed label is a difference of at least 1.
        "max_abs_diff": max((d["max_abs_diff"] for d in quality.outputs.values()), default=0.0),
    }
    checked = {k: b for k, b in constraints.items() if k in QUALITY_METRICS or k == quality.metric}
    broken = violations(figures, checked)
    return "; ".join(broken) if broken else None
