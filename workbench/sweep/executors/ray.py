"""Variants as Ray tasks: builds anywhere, each measurement alone on its node, artifacts by content.

Each variant is two tasks. The build (one CPU, any node) runs the cached pipeline; the measurement
(quality check, in-process timing, served load) asks for the node resource ``measure: 1``, which every
node offers once, so no two measurements ever share a node, and for ``pool:<name>`` when the recipe
names hardware pools. Both are retried on another node when theirs dies (Ray's ``max_retries``: a
lost node is a system failure; a variant's own failure is already a failed record, never retried).

The driver keeps the run folder: the tasks return records, load details and the load engine's
files, and the driver writes them as a local run does. The workspace (source model, reference
outputs, calibration data) goes to the object store once. Nodes that share the driver's cache folder
(they see the marker file the driver leaves there) read and write artifacts in place; the others get
the source model through the object store, and send each built artifact back with its record, so the
driver's cache holds whatever a record names (``export`` works) and the cache stays one cache.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster
from ray.exceptions import RayError, RayTaskError

from workbench.errors import UsageError
from workbench.host import environment
from workbench.paths import cache_dir
from workbench.recipe.loader import recipe_folder
from workbench.registry import recipe_imports
from workbench.report.rundir import RunDir
from workbench.report.schema import VariantRecord
from workbench.sweep.executors.load_workers import ray_load_workers
from workbench.sweep.executors.pools import POOL_RESOURCE_PREFIX, pool_names, pool_of
from workbench.sweep.executors.transfer import Shipment, localize, pack, pack_folder, receive, unpack_folder
from workbench.sweep.runner import Built, Workspace, build_variant, measure_built, stops_the_run
from workbench.sweep.space import Variant

__all__ = ["MEASURE_RESOURCE", "NodeInfo", "RayExecutor", "cluster_nodes", "connected", "local_cluster", "ray_executor"]

logger = logging.getLogger(__name__)

MEASURE_RESOURCE = "measure"
MAX_RETRIES = 3  # a task whose node dies runs again elsewhere, up to this many times
POOL_SHARE = 0.001  # a measurement asks for a sliver of its pool: ``measure`` is what keeps it alone on the node
LOCAL_POOL = "local"  # the pool of a local:N node when the recipe names none
LOCAL_OBJECT_STORE_BYTES = 200 * 1024 * 1024
LOCAL_HOST = "127.0.0.1"
MARKER_PREFIX = ".workbench-driver-"


# ----------------------------------------------------------------------------------------------- connecting


def _local_nodes(cluster: str) -> int | None:
    """N for ``local:N``; None for an address."""
    if not cluster.startswith("local:"):
        return None
    count = cluster.removeprefix("local:")
    if not count.isdigit() or int(count) < 1:
        raise UsageError(f"--cluster {cluster!r}: write local:N with N >= 1 nodes, e.g. local:2")
    return int(count)


def _node_args(index: int, pools: Sequence[str]) -> dict[str, Any]:
    """A local node: one CPU, a small object store, one measurement slot, in pool ``pools[index % len]``."""
    pool = pools[index % len(pools)] if pools else LOCAL_POOL
    return {
        "num_cpus": 1,
        "object_store_memory": LOCAL_OBJECT_STORE_BYTES,
        "node_ip_address": LOCAL_HOST,
        "include_dashboard": False,
        "resources": {MEASURE_RESOURCE: 1, f"{POOL_RESOURCE_PREFIX}{pool}": 1},
    }


@contextmanager
def local_cluster(nodes: int, pools: Sequence[str] = ()) -> Iterator[Cluster]:
    """A Ray cluster of ``nodes`` nodes on 127.0.0.1 (node i in pool ``pools[i % len]``), shut down after.

    While it runs, this process (and what it starts) connects over loopback only: see ``_loopback_only``.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    with _loopback_only():
        cluster = Cluster(initialize_head=True, head_node_args=_node_args(0, pools))
        try:
            for index in range(1, nodes):
                cluster.add_node(**_node_args(index, pools))
            cluster.wait_for_nodes()
            yield cluster
        finally:
            cluster.shutdown()  # type: ignore[no-untyped-call]


@contextmanager
def _loopback_only() -> Iterator[None]:
    """Keep a local cluster on 127.0.0.1. Ray rewrites a loopback address to the machine's network address
    (``resolve_ip_for_localhost``) unless it believes multi-machine clusters are off, which is what its
    setting RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 says: read from the constant here, and from the variable in
    the processes Ray starts."""
    from ray._private import ray_constants  # no public switch for this

    saved_env = os.environ.get(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR)
    saved = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, None)
        else:
            os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = saved_env


@contextmanager
def connected(cluster: str, pools: Sequence[str] = ()) -> Iterator[None]:
    """This process as a driver of ``cluster`` (``local:N`` starts one and stops it after)."""
    nodes = _local_nodes(cluster)
    if nodes is None:
        with _driver(cluster):
            yield
        return
    with local_cluster(nodes, pools) as started, _driver(started.address):
        yield


@contextmanager
def _driver(address: str) -> Iterator[None]:
    """``ray.init`` to ``address``, keeping the run's own SIGTERM handling (Ray's would exit the process)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    previous = signal.getsignal(signal.SIGTERM)
    try:
        _init(address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    finally:
        with suppress(ValueError):  # not the main thread: Ray set nothing either
            signal.signal(signal.SIGTERM, previous)
    try:
        yield
    finally:
        ray.shutdown()  # type: ignore[no-untyped-call]


# Ray Client's proxy forks a server per client while its own gRPC threads run, and the child dies now and then
# ("Starting Ray client server failed"; ray-project/ray#63202, ~7% of connections): a fresh try succeeds.
CLIENT_SERVER_FAILED = ("Starting Ray client server failed", "Initialization failure from server")
CLIENT_ATTEMPTS = 3


def _init(address: str) -> None:
    """``ray.init`` to ``address``; a Ray Client address is tried again when its per-client server died."""
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, configure_logging=False)
            return
        except (ConnectionError, RuntimeError) as exc:
            retry = address.startswith("ray://") and any(text in str(exc) for text in CLIENT_SERVER_FAILED)
            if not retry or attempt == CLIENT_ATTEMPTS:
                raise
            logger.warning("Ray Client's server for this driver failed to start (attempt %d): trying again", attempt)
            with suppress(Exception):
                ray.shutdown()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class NodeInfo:
    """One alive node as ``doctor`` shows it."""

    address: str
    head: bool
    cpus: float
    measure_slots: float
    pools: tuple[str, ...]


def cluster_nodes() -> list[NodeInfo]:
    """The alive nodes of the connected cluster."""
    found = []
    for node in ray.nodes():  # type: ignore[no-untyped-call]
        if not node.get("Alive"):
            continue
        resources: Mapping[str, float] = node.get("Resources", {})
        pools = tuple(
            sorted(k.removeprefix(POOL_RESOURCE_PREFIX) for k in resources if k.startswith(POOL_RESOURCE_PREFIX))
        )
        head = "node:__internal_head__" in resources
        found.append(
            NodeInfo(
                node["NodeManagerAddress"], head, resources.get("CPU", 0.0), resources.get(MEASURE_RESOURCE, 0.0), pools
            )
        )
    return found


def _check_resources(pools: Sequence[str]) -> int:
    """The cluster's measurement slots; a UsageError when it has none, or lacks a pool the recipe names."""
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    slots = int(resources.get(MEASURE_RESOURCE, 0))
    start = 'start each node with `ray start --resources=\'{"measure": 1, "pool:NAME": 1}\'`'
    if slots < 1:
        raise UsageError(f"no node of the cluster offers a '{MEASURE_RESOURCE}' slot: {start}")
    offered = sorted(k.removeprefix(POOL_RESOURCE_PREFIX) for k in resources if k.startswith(POOL_RESOURCE_PREFIX))
    missing = [pool for pool in pools if pool not in offered]
    if missing:
        raise UsageError(f"no node offers pool {', '.join(missing)} (offered: {', '.join(offered) or 'none'}); {start}")
    return slots


# ------------------------------------------------------------------------------------------------ the tasks


@dataclass(frozen=True)
class _Shared:
    """What every task gets: references (not resolved by Ray on the way in) and the cache marker's name."""

    workspace: Any  # ObjectRef[Workspace]: read inside the task, once the recipe's folder imports
    source: Any  # ObjectRef[Shipment]: the source model, for nodes with caches of their own
    marker: str
    folder: str | None


@dataclass(frozen=True)
class _BuildResult:
    built: Built | VariantRecord
    shipment: Shipment | None  # the built artifact, when the building node's cache is not the driver's


@dataclass(frozen=True)
class _Measured:
    record: VariantRecord
    load_details: dict[str, Any] | None
    load_files: bytes | None
    shipment: Shipment | None


@functools.cache
def _node_environment() -> dict[str, Any]:
    """This node's fingerprint, taken once per worker process."""
    return environment()


def _node_workspace(shared: _Shared) -> tuple[Workspace, bool]:
    """The run's workspace as this node sees it, and whether this node shares the driver's cache."""
    workspace: Workspace = ray.get(shared.workspace)
    here = cache_dir()
    if (here / shared.marker).exists():
        return workspace, True
    source = localize(workspace.source.artifact, ray.get(shared.source), here)
    return replace(workspace, cache=here, source=replace(workspace.source, artifact=source)), False


def _build_task(variant: Variant, shared: _Shared) -> _BuildResult:
    with recipe_imports(Path(shared.folder) if shared.folder else None):
        workspace, in_place = _node_workspace(shared)
        built = build_variant(variant, workspace)
        if isinstance(built, VariantRecord) or in_place:
            return _BuildResult(built, None)
        return _BuildResult(built, pack(built.artifact, workspace.cache))


def _measure_task(variant: Variant, result: _BuildResult, shared: _Shared) -> _Measured:
    if isinstance(result.built, VariantRecord):  # the build failed: nothing to measure
        return _Measured(result.built, None, None, None)
    with recipe_imports(Path(shared.folder) if shared.folder else None):
        workspace, in_place = _node_workspace(shared)
        built = result.built
        if result.shipment is not None and not in_place:
            built = replace(built, artifact=localize(built.artifact, result.shipment, workspace.cache))
        with tempfile.TemporaryDirectory(prefix="workbench-measure-") as scratch:
            run = RunDir(Path(scratch) / "run")  # the load engine's files, sent to the driver's run folder
            with _load_workers(workspace, variant):
                record = measure_built(built, replace(workspace, run_path=run.path))
            details = run.read_load_details([variant.id]).get(variant.id)
            folder = run.load_workdir(variant.id)
            files = pack_folder(folder) if folder.is_dir() else None
    node = {**_node_environment(), "ray_node": {"id": ray.get_runtime_context().get_node_id()}}
    record = record.model_copy(update={"environment": node, "attempts": _attempt()})
    return _Measured(record, details, files, None if in_place else result.shipment)


def _load_workers(workspace: Workspace, variant: Variant) -> AbstractContextManager[None]:
    """The measurement's Locust workers as actors on the cluster's nodes (``load.workers`` of them)."""
    recipe = workspace.recipe
    workers = recipe.load.workers if recipe.load.enabled else 0
    placement = recipe.cluster.load_placement if recipe.cluster is not None else "spread"
    return ray_load_workers(workers, placement, pool_of(variant.id), POOL_RESOURCE_PREFIX)


def _attempt() -> int:
    """Which run of this task this is (1: the first; more after its node was lost). Ray keeps the number in
    the task's spec and has no public call that reads it; an older Ray without it counts as the first."""
    core_worker = getattr(ray._private.worker.global_worker, "core_worker", None)
    read = getattr(core_worker, "get_current_task_attempt_number", None)
    return int(read()) + 1 if read is not None else 1


# ----------------------------------------------------------------------------------------------- the driver


class RayExecutor:
    """Submits each variant as a build task and a measurement task; collects records as they finish."""

    def __init__(self, workspace: Workspace, slots: int) -> None:
        self.slots = slots
        self._workspace = workspace
        self._run = RunDir(workspace.run_path) if workspace.run_path is not None else None
        self._marker = f"{MARKER_PREFIX}{uuid.uuid4().hex}"
        (workspace.cache / self._marker).write_text(str(os.getpid()))
        folder = recipe_folder(workspace.recipe)
        self._shared = _Shared(
            workspace=ray.put(workspace),
            source=ray.put(pack(workspace.source.artifact, workspace.cache)),
            marker=self._marker,
            folder=str(folder) if folder else None,
        )
        self._pending: dict[Any, Variant] = {}
        self._build = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_build_task)
        self._measure = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(_measure_task)

    def submit(self, variant: Variant) -> None:
        built = self._build.remote(variant, self._shared)
        resources = {MEASURE_RESOURCE: 1.0}
        if (pool := pool_of(variant.id)) is not None:
            resources[f"{POOL_RESOURCE_PREFIX}{pool}"] = POOL_SHARE
        measured = self._measure.options(resources=resources).remote(variant, built, self._shared)
        self._pending[measured] = variant

    def finished(self) -> list[tuple[Variant, VariantRecord]]:
        ready, _ = ray.wait(list(self._pending), num_returns=1)
        return [(self._pending[ref], self._collect(ref, self._pending.pop(ref))) for ref in ready]

    def close(self) -> None:
        """Cancel what is still in flight (an interrupted run) and take the cache marker away."""
        for ref in self._pending:
            with suppress(Exception):  # already finished, or its node is gone: nothing to cancel
                ray.cancel(ref, force=True)
        self._pending.clear()
        (self._workspace.cache / self._marker).unlink(missing_ok=True)

    def _collect(self, ref: Any, variant: Variant) -> VariantRecord:
        try:
            measured: _Measured = ray.get(ref)
        except RayTaskError as exc:  # raised in our code: a programming error or bad input stops the run
            cause = exc.cause if isinstance(exc.cause, Exception) else exc
            if stops_the_run(cause):
                raise cause from None
            return _lost(variant, exc)
        except RayError as exc:  # the retries ran out (nodes kept dying): this variant fails, the run goes on
            return _lost(variant, exc)
        self._write_back(variant, measured)
        return measured.record.model_copy(update={"pool": pool_of(variant.id)})

    def _write_back(self, variant: Variant, measured: _Measured) -> None:
        """What the nodes made, where a local run keeps it: load files in the run, the artifact in the cache."""
        if measured.shipment is not None and measured.record.artifact is not None:
            receive(measured.shipment, self._workspace.cache)
        if self._run is None:
            return
        if measured.load_files is not None:
            unpack_folder(measured.load_files, self._run.load_workdir(variant.id))
        if measured.load_details is not None:
            self._run.write_load_details(variant.id, measured.load_details)


def _lost(variant: Variant, exc: Exception) -> VariantRecord:
    """A variant the cluster could not finish, as a failed record."""
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return VariantRecord(
        variant=variant.id,
        pipeline=variant.pipeline,
        is_baseline=variant.is_baseline,
        steps=list(variant.steps),
        serving=variant.serving,
        serving_label=variant.serving.describe(),
        runtime=variant.serving.runtime.name,
        status="failed",
        reason=f"{type(exc).__name__}: {line}"[:200],
        error=str(exc),
        pool=pool_of(variant.id),
    )


@contextmanager
def ray_executor(cluster: str, workspace: Workspace) -> Iterator[RayExecutor]:
    """A RayExecutor on ``cluster`` (started for ``local:N``), closed and disconnected when the block ends."""
    pools = pool_names(workspace.recipe)
    with connected(cluster, pools):
        slots = _check_resources(pools)
        executor = RayExecutor(workspace, slots=slots + 1)  # one build ahead of the measurements
        try:
            yield executor
        finally:
            executor.close()
