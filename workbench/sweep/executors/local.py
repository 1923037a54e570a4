"""The in-process executor: one variant at a time, in the order the search asks (the runner's own loop)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workbench.report.schema import VariantRecord
    from workbench.sweep.runner import Workspace
    from workbench.sweep.space import Variant


class LocalExecutor:
    """Evaluates each submitted variant here, when the runner collects it: ask, evaluate, write, tell."""

    slots = 1

    def __init__(self, workspace: Workspace) -> None:
        self._workspace = workspace
        self._queued: list[Variant] = []

    def submit(self, variant: Variant) -> None:
        self._queued.append(variant)

    def finished(self) -> list[tuple[Variant, VariantRecord]]:
        from workbench.sweep.runner import evaluate_variant  # the runner imports this package

        variant = self._queued.pop(0)
        return [(variant, evaluate_variant(variant, self._workspace))]
