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
CPU on its node, so a saturated worker is flagged wherever it runs.

Nothing is shared between nodes but Ray and the master's port, so a real cluster (KubeRay included) needs
only that every node reaches the measuring node's address (the Locust master) and the target; no shared
file system, no synchronised clocks. Each step, the actor gets the step's config and payload files as
bytes (through Ray) and runs its worker in a private folder of its own node. A relay thread beside the
measurement pulls, every ``RELAY_INTERVAL_S``, what the worker wrote (new record bytes by file offset,
done markers, its log) into the real step folder, and forwards the step's stop file to it. Record
instants are each machine's ``time.monotonic_ns()``: the relay translates them into this node's clock
by an offset estimated when the actor starts (the round trip with the smallest delay, ``CLOCK_ROUNDS``
of them). Relayed records arrive late, and each worker says how late (``record_delay_ns``: the age of
its last completed pull), so the engine never cuts a window before its records are in. The same path
runs on one machine too.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from workbench.errors import MeasurementError
from workbench.measure.load.generator import LocalWorker, LocustRun, UsageSampler, workers_launched_by
from workbench.measure.load.wire import RECORD_DTYPE
from workbench.measure.server import HOST_ENV
from workbench.measure.usage import ProcessSampler, ProcessUsage

__all__ = ["RayWorkerLauncher", "placed_nodes", "ray_load_workers"]

logger = logging.getLogger(__name__)

PLACEMENTS = ("spread", "same-node", "other-node")
RELAY_INTERVAL_S = 0.1  # as often as a worker flushes its records
RELAY_STALL_S = 30.0  # a relay that brought nothing for this long fails the step (it would never settle)
CLOCK_ROUNDS = 8
INPUT_KEYS = ("payload_bin", "payload_index")  # the config's files a worker reads: shipped to its node
TIME_FIELDS = ("intended", "start", "end")


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


def _shift_records(data: bytes, delta_ns: int) -> bytes:
    """Whole records with ``delta_ns`` added to each of their instants."""
    if not delta_ns or not data:
        return data
    records = np.frombuffer(data, dtype=RECORD_DTYPE).copy()
    for name in TIME_FIELDS:
        records[name] += delta_ns
    return records.tobytes()


@dataclass
class _Pulled:
    """What a worker wrote since the last pull: record bytes (whole records) per file, new done markers, log."""

    records: dict[str, bytes] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    log: bytes = b""


class _WorkerActor:
    """One Locust worker on this actor's node, in a private folder, and the sampler of its CPU.

    ``clock_skew_ns`` is for tests: it plays a node whose clock reads that much more than this one's.
    """

    def __init__(self, clock_skew_ns: int = 0) -> None:
        self._skew_ns = clock_skew_ns
        self._worker: LocalWorker | None = None
        self._sampler: ProcessSampler | None = None
        self._folder: Path | None = None
        self._log: Path | None = None
        self._offsets: dict[str, int] = {}
        self._done: set[str] = set()

    def now_ns(self) -> int:
        return time.monotonic_ns() + self._skew_ns

    def node(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def start(
        self,
        run: LocustRun,
        config: dict[str, Any],
        inputs: dict[str, Any],
        master: tuple[str, int],
        index: int,
        niceness: int,
    ) -> str:
        """Start worker ``index`` of ``run`` in a fresh private folder holding ``config`` and its ``inputs``
        (config key: the file's bytes in Ray's object store), at the measuring process's ``niceness``."""
        self._clear()
        _renice(niceness)
        local = self._prepare(run, config, inputs)
        self._log = local.log_dir / f"locust-worker-{index}.log"
        self._worker = LocalWorker.spawn(local, master, index, where=self.node())
        return self.node()

    def _prepare(self, run: LocustRun, config: dict[str, Any], inputs: dict[str, Any]) -> LocustRun:
        folder = self._folder = Path(tempfile.mkdtemp(prefix="workbench-load-worker-"))
        local = dict(config)
        blobs: list[bytes] = ray.get(list(inputs.values()))  # Ray resolves only top-level arguments itself
        for key, data in zip(inputs, blobs, strict=True):
            (folder / key).write_bytes(data)
            local[key] = str(folder / key)
        local.update(records_dir=str(folder / "records"), done_dir=str(folder / "done"), stop_file=str(folder / "stop"))
        (folder / "locust.json").write_text(json.dumps(local))
        return replace(run, config_path=folder / "locust.json", log_dir=folder)

    def pull(self) -> _Pulled:
        """What the worker wrote since the last pull. Done markers are listed before the records are read:
        a user flushes its records before it leaves its marker, so a marker never arrives ahead of them."""
        pulled = _Pulled()
        if self._folder is None:
            return pulled
        done = self._folder / "done"
        fresh = sorted({p.name for p in done.iterdir()} - self._done) if done.is_dir() else []
        self._done.update(fresh)
        pulled.done = fresh
        for path in sorted((self._folder / "records").glob("*.bin")):
            data = self._read_new(path, RECORD_DTYPE.itemsize)
            if data:
                pulled.records[path.name] = _shift_records(data, self._skew_ns)
        if self._log is not None and self._log.exists():
            pulled.log = self._read_new(self._log, 1)
        return pulled

    def _read_new(self, path: Path, unit: int) -> bytes:
        """The bytes appended to ``path`` since the last read, in whole ``unit``s."""
        offset = self._offsets.get(path.name, 0)
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
        data = data[: len(data) - len(data) % unit]
        self._offsets[path.name] = offset + len(data)
        return data

    def stop_sending(self) -> None:
        """The step's stop file, in the worker's folder (its users poll it)."""
        if self._folder is not None:
            (self._folder / "stop").touch()

    def records_written(self) -> int:
        """How many records the current worker has written on this node (what the relay should bring)."""
        if self._folder is None:
            return 0
        return sum(p.stat().st_size for p in (self._folder / "records").glob("*.bin")) // RECORD_DTYPE.itemsize

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

    def close(self) -> None:
        """Stop the worker and remove its folder (``ray.kill`` would leave the folder behind)."""
        self._clear()

    def _clear(self) -> None:
        if self._worker is not None:
            self._worker.terminate()
            self._worker.wait_or_kill(5.0)
            self._worker = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        self._folder, self._log = None, None
        self._offsets.clear()
        self._done.clear()


def _renice(niceness: int) -> None:
    """Run at ``niceness`` (and so will the worker this process spawns). Ray starts its workers at a low
    priority (nice 15): a Locust worker left there, beside a harness and a master that are not, is starved
    on a busy node, sends late and flushes its records seconds late."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except OSError as exc:  # raising a priority needs CAP_SYS_NICE: then it stays where Ray put it
        logger.warning(
            "a Locust worker stays at nice %d, not %d: %s", os.getpriority(os.PRIO_PROCESS, 0), niceness, exc
        )


def _clock_offset_ns(actor: Any, rounds: int = CLOCK_ROUNDS) -> int:
    """The actor's clock minus this one's: from the round trip with the smallest delay, the remote reading
    is taken to be the midpoint (its error is at most half that round trip)."""
    best: tuple[int, int] | None = None
    for _ in range(rounds):
        sent_ns = time.monotonic_ns()
        remote_ns: int = ray.get(actor.now_ns.remote())
        back_ns = time.monotonic_ns()
        if best is None or back_ns - sent_ns < best[0]:
            best = (back_ns - sent_ns, remote_ns - (sent_ns + back_ns) // 2)
    return best[1] if best is not None else 0


@dataclass(frozen=True)
class _StepFolder:
    """Where a worker's outputs go on the measuring node: the step's own paths, from its config."""

    records: Path
    done: Path
    stop: Path
    log: Path

    @classmethod
    def of(cls, run: LocustRun, config: Mapping[str, Any], index: int) -> _StepFolder:
        return cls(
            records=Path(config["records_dir"]),
            done=Path(config["done_dir"]),
            stop=Path(config["stop_file"]),
            log=run.log_dir / f"locust-worker-{index}.log",
        )


class _Relay:
    """Brings a worker's outputs into the step folder (instants in this node's clock), forwards the stop file."""

    def __init__(self, actor: Any, folder: _StepFolder, index: int, offset_ns: int) -> None:
        self._actor = actor
        self._folder = folder
        self._prefix = f"w{index}-"  # two nodes' pids may collide
        self._offset_ns = offset_ns
        self._stopped = threading.Event()
        self._stop_sent = False
        self._complete_ns = time.monotonic_ns()  # every record written before this instant is here
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"load-relay-{index}", daemon=True)

    def start(self) -> _Relay:
        self._folder.log.touch()  # as a local worker's: every worker has its log in the step folder
        self._thread.start()
        return self

    def delay_ns(self) -> int:
        """How far behind now the relayed records may be; raises when the relay has stalled."""
        delay_ns = time.monotonic_ns() - self._complete_ns
        if delay_ns > RELAY_STALL_S * 1e9:
            why = f": {self._error}" if self._error is not None else ""
            raise MeasurementError(
                f"the records of Locust worker {self._prefix[1:-1]} stopped arriving (none for {RELAY_STALL_S:.0f} s){why}"
            )
        return delay_ns

    def stop(self) -> None:
        """Stop relaying after one last pull (the worker has exited: what it wrote is all there is)."""
        self._stopped.set()
        self._thread.join(timeout=RELAY_STALL_S)
        if not self._thread.is_alive():
            try:
                self._pull_once()
            except Exception as exc:  # its node is gone: what was relayed is what there is
                logger.warning("last pull of Locust worker %s failed: %s", self._prefix[1:-1], exc)

    def _loop(self) -> None:
        while not self._stopped.wait(RELAY_INTERVAL_S):
            try:
                self._pull_once()
            except Exception as exc:  # seen by the engine through delay_ns, and by check_alive
                self._error = exc
                logger.warning("relay of Locust worker %s: %s", self._prefix[1:-1], exc)
                return

    def _pull_once(self) -> None:
        asked_ns = time.monotonic_ns()
        if not self._stop_sent and self._folder.stop.exists():
            ray.get(self._actor.stop_sending.remote(), timeout=RELAY_STALL_S)
            self._stop_sent = True
        pulled: _Pulled = ray.get(self._actor.pull.remote(), timeout=RELAY_STALL_S)
        self._write(pulled)
        self._complete_ns = asked_ns

    def _write(self, pulled: _Pulled) -> None:
        """Records first, markers after: a marker seen here means its user's records are here."""
        for name, data in pulled.records.items():
            self._folder.records.mkdir(parents=True, exist_ok=True)
            with (self._folder.records / f"{self._prefix}{name}").open("ab") as out:
                out.write(_shift_records(data, -self._offset_ns))
        if pulled.log:
            with self._folder.log.open("ab") as out:
                out.write(pulled.log)
        for name in pulled.done:
            self._folder.done.mkdir(parents=True, exist_ok=True)
            (self._folder.done / f"{self._prefix}{name}").touch()


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
    """A ``LocustWorker`` as its actor's proxy, with the relay of its outputs."""

    def __init__(self, actor: Any, where: str, relay: _Relay) -> None:
        self._actor = actor
        self._relay = relay
        self.where = where

    def poll(self) -> int | None:
        status: int | None = ray.get(self._actor.poll.remote())
        return status

    def terminate(self) -> None:
        ray.get(self._actor.terminate.remote())

    def wait_or_kill(self, timeout_s: float) -> None:
        try:
            ray.get(self._actor.wait_or_kill.remote(timeout_s))
        finally:
            self._relay.stop()

    def sampler(self, interval_s: float) -> UsageSampler:
        return _RemoteSampler(self._actor, interval_s)

    def record_delay_ns(self) -> int:
        return self._relay.delay_ns()


class RayWorkerLauncher:
    """Starts worker i of each Locust run in an actor on ``nodes[i % len(nodes)]`` (actors kept across steps).

    ``clock_skews_ns`` is for tests: worker i's actor plays a node whose clock is ``clock_skews_ns[i]`` ahead.
    """

    def __init__(self, master_host: str, nodes: Sequence[str], *, clock_skews_ns: Sequence[int] = ()) -> None:
        self.master_host = master_host
        self._nodes = list(nodes)
        self._skews_ns = list(clock_skews_ns)
        self._actors: dict[int, tuple[Any, int]] = {}  # index: (actor, its clock offset in ns)
        self._shipped: dict[tuple[str, int, int], Any] = {}  # (path, size, mtime): its bytes in Ray's store
        self._remote = ray.remote(num_cpus=0, max_restarts=0)(_WorkerActor)

    def launch(self, run: LocustRun, master_port: int, index: int) -> _ActorWorker:
        actor, offset_ns = self._actor(index)
        config: dict[str, Any] = json.loads(run.config_path.read_text())
        inputs = {key: self._ship(Path(config[key])) for key in INPUT_KEYS if config.get(key)}
        master = (self.master_host, master_port)
        niceness = os.getpriority(os.PRIO_PROCESS, 0)  # the harness's and the master's, which it runs beside
        where: str = ray.get(actor.start.remote(run, config, inputs, master, index, niceness))
        relay = _Relay(actor, _StepFolder.of(run, config, index), index, offset_ns).start()
        return _ActorWorker(actor, where, relay)

    def sent_records(self) -> int:
        """How many records the workers of the last run wrote on their nodes (the relay should bring all)."""
        return sum(ray.get([actor.records_written.remote() for actor, _ in self._actors.values()]))

    def _ship(self, path: Path) -> Any:
        """``path``'s bytes in Ray's object store, put once for all steps and workers."""
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._shipped:
            self._shipped[key] = ray.put(path.read_bytes())
        return self._shipped[key]

    def _actor(self, index: int) -> tuple[Any, int]:
        if index not in self._actors:
            node = self._nodes[index % len(self._nodes)]
            strategy = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
            skew_ns = self._skews_ns[index] if index < len(self._skews_ns) else 0
            actor = self._remote.options(scheduling_strategy=strategy).remote(skew_ns)
            self._actors[index] = (actor, _clock_offset_ns(actor))
            logger.debug("load worker %d on node %s: clock offset %d ns", index, node, self._actors[index][1])
        return self._actors[index]

    def close(self) -> None:
        """Stop the workers, remove their folders, and kill the actors."""
        for actor, _ in self._actors.values():
            with suppress(Exception):  # its node is gone already: nothing left to clean
                ray.get(actor.close.remote(), timeout=RELAY_STALL_S)
            with suppress(Exception):
                ray.kill(actor)
        self._actors.clear()
        self._shipped.clear()


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
    address = str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
    launcher = RayWorkerLauncher(address, nodes)
    try:
        with workers_launched_by(launcher), _harness_listening_on(address if nodes != [here] else None):
            yield
    finally:
        launcher.close()


@contextmanager
def _harness_listening_on(address: str | None) -> Iterator[None]:
    """Within the block, measured servers listen on ``address`` (this node's, which workers on other nodes
    reach) instead of 127.0.0.1; nothing changes for None (every worker beside the harness)."""
    if address is None:
        yield
        return
    before = os.environ.get(HOST_ENV)
    os.environ[HOST_ENV] = address
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(HOST_ENV, None)
        else:
            os.environ[HOST_ENV] = before
