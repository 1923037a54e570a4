"""Locust workers as Ray actors: distributed load for a measurement on a cluster.

The master stays with the measurement (the harness's node) and listens on that node's address; each
of ``load.workers`` workers is an actor that starts ``locust --worker`` on the node ``cluster.load_placement``
picks, among the nodes of the measurement's pool (any node without pools):

==============  ==========================================================================
``spread``      worker i on node i of [this node, then the others]: one per node while they last
``same-node``   every worker beside the harness
``other-node``  the workers on the pool's other nodes only (the harness's CPU left to the harness)
==============  ==========================================================================

An actor asks for no CPU (the load it makes is measured, not scheduled) and lives for one measurement:
it is started with the first load step and killed after the last. The worker process samples its own
CPU on its node, so a saturated worker is flagged wherever it runs. The workers read the step's
config and payloads and write their request records in the step folder, so every node must see the
measuring node's scratch folder (one machine, or a shared file system).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from workbench.errors import MeasurementError
from workbench.measure.load.generator import LocalWorker, LocustRun, UsageSampler, workers_launched_by
from workbench.measure.usage import ProcessSampler, ProcessUsage

__all__ = ["RayWorkerLauncher", "placed_nodes", "ray_load_workers"]

logger = logging.getLogger(__name__)

PLACEMENTS = ("spread", "same-node", "other-node")


def placed_nodes(placement: str, here: str, nodes: Sequence[str]) -> list[str]:
    """The nodes the workers go to, in turn, for ``placement``; ``here`` is the measuring node."""
    others = [node for node in nodes if node != here]
    if placement == "same-node":
        return [here]
    if placement == "other-node":
        if not others:
            raise MeasurementError("cluster.load_placement other-node: the measurement's pool has no other node")
        return others
    return [here, *others]


class _WorkerActor:
    """One Locust worker on this actor's node, and the sampler of its CPU."""

    def __init__(self) -> None:
        self._worker: LocalWorker | None = None
        self._sampler: ProcessSampler | None = None

    def start(self, run: LocustRun, master: tuple[str, int], index: int) -> str:
        if not run.config_path.exists():
            raise MeasurementError(
                f"a Locust worker on node {self.node()} cannot see the step folder {run.log_dir}: distributed load "
                "needs the measuring node's scratch folder on a shared file system"
            )
        self._worker = LocalWorker.spawn(run, master, index, where=self.node())
        return self.node()

    def node(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def poll(self) -> int | None:
        return self._worker.poll() if self._worker is not None else None

    def terminate(self) -> None:
        if self._worker is not None:
            self._worker.terminate()

    def wait_or_kill(self, timeout_s: float) -> None:
        if self._worker is not None:
            self._worker.wait_or_kill(timeout_s)

    def start_sampling(self, interval_s: float) -> None:
        if self._worker is not None:
            self._sampler = ProcessSampler(self._worker.pid, interval_s=interval_s)
            self._sampler.start()

    def stop_sampling(self) -> ProcessUsage:
        if self._sampler is None:
            return {"cpu_percent_mean": 0.0, "cpu_percent_max": 0.0, "rss_mb_max": 0.0, "samples": 0}
        usage, self._sampler = self._sampler.stop(), None
        return usage


class _RemoteSampler:
    """A ``UsageSampler`` whose sampling happens in the worker's actor, on the worker's node."""

    def __init__(self, actor: Any, interval_s: float) -> None:
        self._actor = actor
        self._interval_s = interval_s

    def start(self) -> None:
        ray.get(self._actor.start_sampling.remote(self._interval_s))

    def stop(self) -> ProcessUsage:
        usage: ProcessUsage = ray.get(self._actor.stop_sampling.remote())
        return usage


class _ActorWorker:
    """A ``LocustWorker`` as its actor's proxy."""

    def __init__(self, actor: Any, where: str) -> None:
        self._actor = actor
        self.where = where

    def poll(self) -> int | None:
        status: int | None = ray.get(self._actor.poll.remote())
        return status

    def terminate(self) -> None:
        ray.get(self._actor.terminate.remote())

    def wait_or_kill(self, timeout_s: float) -> None:
        ray.get(self._actor.wait_or_kill.remote(timeout_s))

    def sampler(self, interval_s: float) -> UsageSampler:
        return _RemoteSampler(self._actor, interval_s)


class RayWorkerLauncher:
    """Starts worker i of each Locust run in an actor on ``nodes[i % len(nodes)]`` (actors kept across steps)."""

    def __init__(self, master_host: str, nodes: Sequence[str]) -> None:
        self.master_host = master_host
        self._nodes = list(nodes)
        self._actors: dict[int, Any] = {}
        self._remote = ray.remote(num_cpus=0, max_restarts=0)(_WorkerActor)

    def launch(self, run: LocustRun, master_port: int, index: int) -> _ActorWorker:
        actor = self._actor(index)
        where: str = ray.get(actor.start.remote(run, (self.master_host, master_port), index))
        return _ActorWorker(actor, where)

    def _actor(self, index: int) -> Any:
        if index not in self._actors:
            node = self._nodes[index % len(self._nodes)]
            strategy = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
            self._actors[index] = self._remote.options(scheduling_strategy=strategy).remote()
        return self._actors[index]

    def close(self) -> None:
        """Kill the actors (and with them any worker process still running)."""
        for actor in self._actors.values():
            with suppress(Exception):  # its node is gone already: nothing left to kill
                ray.kill(actor)
        self._actors.clear()


def _pool_nodes(pool: str | None, resource_prefix: str) -> list[str]:
    """The alive nodes of ``pool`` (every alive node when None), in a stable order."""
    found = []
    for node in ray.nodes():  # type: ignore[no-untyped-call]
        if node.get("Alive") and (pool is None or f"{resource_prefix}{pool}" in node.get("Resources", {})):
            found.append(str(node["NodeID"]))
    return sorted(found)


@contextmanager
def ray_load_workers(workers: int, placement: str, pool: str | None, resource_prefix: str) -> Iterator[None]:
    """Within the block, a measurement's Locust workers run as actors placed by ``placement``; none when
    ``workers`` is 0 (one standalone Locust process beside the harness, as locally)."""
    if workers < 1:
        yield
        return
    here = str(ray.get_runtime_context().get_node_id())
    nodes = placed_nodes(placement, here, _pool_nodes(pool, resource_prefix))
    launcher = RayWorkerLauncher(ray.util.get_node_ip_address(), nodes)  # type: ignore[no-untyped-call]
    try:
        with workers_launched_by(launcher):
            yield
    finally:
        launcher.close()
