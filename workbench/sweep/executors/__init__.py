"""Where each variant is built and measured: here, one at a time (``local``), or as Ray tasks (``ray``).

An executor takes variants (``submit``) and hands back finished records (``finished``, which blocks
until at least one is done); the runner keeps ``slots`` variants in flight and writes the run folder
itself, so a cluster run reads, reports, selects, exports and resumes like a local one.

=====================  ======================================================================
``--cluster``          where the variants run
=====================  ======================================================================
(none)                 this process, in order (``LocalExecutor``: the runner's loop as ever)
``local:N``            a Ray cluster of N nodes on 127.0.0.1, started for the run (tests, demos)
``ray://host:port``    an existing Ray cluster, through Ray Client
``auto`` / host:port   an existing Ray cluster this machine is a node of (``ray start``)
=====================  ======================================================================

Ray is the ``[ray]`` extra: importing this package never imports it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

from workbench.errors import UsageError
from workbench.sweep.executors.local import LocalExecutor
from workbench.sweep.executors.pools import on_pools, pool_names, pool_of

if TYPE_CHECKING:
    from workbench.report.schema import VariantRecord
    from workbench.sweep.runner import Workspace
    from workbench.sweep.space import Variant

__all__ = ["Executor", "LocalExecutor", "on_pools", "open_executor", "pool_of"]


class Executor(Protocol):
    """Builds and measures variants somewhere; the runner records what comes back."""

    slots: int  # how many variants the runner keeps in flight

    def submit(self, variant: Variant) -> None:
        """Start ``variant`` (or queue it)."""

    def finished(self) -> list[tuple[Variant, VariantRecord]]:
        """Block until at least one submitted variant is done; each with its record."""
        ...


@contextmanager
def open_executor(cluster: str | None, workspace: Workspace) -> Iterator[Executor]:
    """The executor for ``cluster`` (None: this process), closed (cluster tasks cancelled) when the block ends."""
    if cluster is None:
        if pool_names(workspace.recipe):
            raise UsageError(
                "cluster.targets names hardware pools of a cluster: add --cluster (e.g. --cluster local:2)"
            )
        yield LocalExecutor(workspace)
        return
    from workbench.sweep.executors.ray import ray_executor  # the [ray] extra, only when a cluster is asked for

    with ray_executor(cluster, workspace) as executor:
        yield executor
