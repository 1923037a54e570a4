"""The Locust side of a load step: OIP v2 users built on ``FastHttpUser``. Runs only inside Locust.

The workbench starts ``python -m locust -f this_file ClosedLoopUser|OpenLoopUser --headless ...``
(``GrpcClosedLoopUser|GrpcOpenLoopUser`` for ``load.protocol: grpc``: the same loops and records, each
request an OIP v2 ``ModelInfer`` call to ``grpc_target``, see ``wire_grpc``)
(standalone, or one master and N workers) with ``WORKBENCH_LOAD_CONFIG`` naming a JSON file::

    {"infer_path": "/v2/models/digits/infer", "payload_bin": ..., "payload_index": ...,
     "records_dir": ..., "done_dir": ..., "stop_file": ..., "loop": "closed" | "open",
     "rate_rps": 100.0, "end_rps": null, "hold_s": 1.0, "ramp_s": 6.0, "arrival": "poisson", "schedulers": 1,
     "max_duration_s": 9.0, "max_in_flight": 64, "request_timeout_s": 10.0, "drain_s": 3.0, "seed": 0,
     "transport": "wire" | "locust", "blocking_socket": false, "model": "digits", "grpc_target": "127.0.0.1:8001"}

Every request appends one ``wire.RECORD_STRUCT`` record to ``records_dir/<pid>.bin`` (flushed every
100 ms); the workbench reads them as the step runs. When ``stop_file`` appears (or ``max_duration_s``
has passed) users stop sending, wait for what they have in flight (up to ``drain_s``; what is left is
recorded as ``unfinished``), and each leaves a marker in ``done_dir``. Locust's own statistics are
kept but not used: the workbench computes every figure from the records.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.pool
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

from workbench.measure.load.wire import FLAG_WAITED_FOR_SLOT, RECORD_STRUCT, Kind, arrival_offsets_ns, kind_of_status
from workbench.measure.load.wire_grpc import GrpcWire, grpc_request
from workbench.measure.load.wire_http import HttpError, WireConnection, encode_request

CONFIG_ENV = "WORKBENCH_LOAD_CONFIG"
FLUSH_INTERVAL_S = 0.1
FLUSH_INTERVAL_NS = int(FLUSH_INTERVAL_S * 1e9)
STOP_POLL_S = 0.05
MAX_SLEEP_S = 0.05  # an open-loop scheduler sleeps in slices so it sees the stop file quickly
CLOSED_LOOP_SLICE_NS = 50_000_000


def _load_config() -> dict[str, Any]:
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise RuntimeError(f"{CONFIG_ENV} is not set: this locustfile is started by the workbench")
    config: dict[str, Any] = json.loads(Path(path).read_text())
    return config


CONFIG = _load_config()


def _load_payloads() -> list[tuple[bytes, dict[str, str]]]:
    blob = Path(CONFIG["payload_bin"]).read_bytes()
    index = json.loads(Path(CONFIG["payload_index"]).read_text())
    return [(blob[e["offset"] : e["offset"] + e["length"]], e["headers"]) for e in index["payloads"]]


class _Recorder:
    """Appends records to this process's file, flushed every FLUSH_INTERVAL_S: by the request that finds the
    last flush that old, and by a greenlet while no request comes. A user on a blocking socket never yields to
    gevent's hub while it has work, so the greenlet alone could go seconds without running (seen on Ray
    workers at nice 15: ~2.4 s), and the engine would cut windows before their records were on disk."""

    def __init__(self) -> None:
        folder = Path(CONFIG["records_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        self._file = (folder / f"{os.getpid()}.bin").open("ab", buffering=1 << 16)
        self._flushed_ns = time.monotonic_ns()
        gevent.spawn(self._flush_forever)

    def add(self, intended_ns: int, start_ns: int, end_ns: int, kind: Kind, flags: int = 0) -> None:
        self._file.write(RECORD_STRUCT.pack(intended_ns, start_ns, end_ns, int(kind), flags, 0))
        if end_ns - self._flushed_ns >= FLUSH_INTERVAL_NS:
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        self._flushed_ns = time.monotonic_ns()

    def _flush_forever(self) -> None:
        while True:
            gevent.sleep(FLUSH_INTERVAL_S)
            self.flush()


class _Control:
    """Whether to stop sending: the stop file appeared, or the step's longest duration passed."""

    def __init__(self) -> None:
        self._stop_file = Path(CONFIG["stop_file"])
        self._deadline_ns = time.monotonic_ns() + int(CONFIG["max_duration_s"] * 1e9)
        self._stopped = False
        gevent.spawn(self._watch)

    def stopped(self) -> bool:
        return self._stopped

    def _watch(self) -> None:
        while not self._stopped:
            self._stopped = self._stop_file.exists() or time.monotonic_ns() >= self._deadline_ns
            gevent.sleep(STOP_POLL_S)


_shared: dict[str, Any] = {}


def _state() -> tuple[_Recorder, _Control, list[tuple[bytes, dict[str, str]]]]:
    """This process's recorder, control and payloads, made on first use (never in the master)."""
    if not _shared:
        _shared.update(recorder=_Recorder(), control=_Control(), payloads=_load_payloads())
    return _shared["recorder"], _shared["control"], _shared["payloads"]


def _kind(status: int, body: bytes) -> Kind:
    kind = kind_of_status(status)
    if kind is Kind.OK and b'"outputs"' not in body:
        return Kind.BAD_RESPONSE
    return kind


def _classify(response: Any) -> Kind:
    """The kind of a FastHttpSession response (status 0: no response came)."""
    status = int(response.status_code or 0)
    if status == 0:
        error = response.error
        timed_out = isinstance(error, socket.timeout | TimeoutError | gevent.Timeout) or "timed out" in str(error)
        return Kind.TIMEOUT if timed_out else Kind.CONNECTION
    return _kind(status, response.content or b"")


class _OipUser(FastHttpUser):
    """Sends the prepared OIP v2 infer requests in rotation and records each one.

    ``transport: wire`` (the default) sends each pre-encoded request in one write on a keep-alive
    connection of its own (``wire_http``), so the generator adds as little as it can to what it
    measures; ``transport: locust`` goes through Locust's FastHttpSession.
    """

    abstract = True
    wait_time = constant(0)
    network_timeout = float(CONFIG["request_timeout_s"])
    connection_timeout = float(CONFIG["request_timeout_s"])
    insecure = True

    def on_start(self) -> None:
        self.recorder, self.control, self.payloads = _state()
        self.next_payload = id(self) % len(self.payloads)
        self.finished = False
        self.discard = False  # set once the drain gave up: killed requests are already recorded
        self.wire = CONFIG.get("transport", "wire") == "wire"
        self.url = str(self.host)
        self.encoded = [encode_request(self.url, CONFIG["infer_path"], body, h) for body, h in self.payloads]
        self.idle: list[WireConnection] = []
        # The only sender in its process (one closed-loop user): block on the socket itself.
        self.blocking = bool(CONFIG.get("blocking_socket", False))

    def send(self, intended_ns: int, flags: int = 0) -> None:
        """One infer request; its record is written when the response has been read."""
        index = self.next_payload
        self.next_payload = (index + 1) % len(self.payloads)
        start_ns, end_ns, kind, size = self._exchange(index)
        if not self.discard:
            self.recorder.add(intended_ns, start_ns, end_ns, kind, flags)
        if self.wire:  # keep Locust's own summary meaningful; fired after the clock stopped
            self.environment.events.request.fire(
                request_type="POST", name="infer", response_time=(end_ns - start_ns) / 1e6, response_length=size,
                exception=None if kind is Kind.OK else RuntimeError(kind.label), context={},
            )  # fmt: skip

    def _exchange(self, index: int) -> tuple[int, int, Kind, int]:
        """Send payload ``index`` and read the answer: (start ns, end ns, kind, answer bytes)."""
        return self._wire(index) if self.wire else self._locust(index)

    def _wire(self, index: int) -> tuple[int, int, Kind, int]:
        connection = (
            self.idle.pop()
            if self.idle
            else WireConnection(self.url, float(CONFIG["request_timeout_s"]), blocking=self.blocking)
        )
        start_ns = time.monotonic_ns()
        try:
            response = connection.request(self.encoded[index])
        except TimeoutError:
            return start_ns, time.monotonic_ns(), Kind.TIMEOUT, 0
        except HttpError:
            return start_ns, time.monotonic_ns(), Kind.BAD_RESPONSE, 0
        except OSError:
            return start_ns, time.monotonic_ns(), Kind.CONNECTION, 0
        end_ns = time.monotonic_ns()
        self.idle.append(connection)
        return start_ns, end_ns, _kind(response.status, response.body), len(response.body)

    def _locust(self, index: int) -> tuple[int, int, Kind, int]:
        body, headers = self.payloads[index]
        start_ns = time.monotonic_ns()
        # geventhttpclient sends bytes as they are; Locust's hint only names str and dict.
        post = self.client.post
        with post(CONFIG["infer_path"], data=body, headers=headers, catch_response=True, name="infer") as response:  # type: ignore[arg-type]
            kind = _classify(response)
            end_ns = time.monotonic_ns()
            if kind is Kind.OK:
                response.success()
            else:
                response.failure(kind.label)
        return start_ns, end_ns, kind, len(response.content or b"")

    def finish(self) -> None:
        """Leave this user's done marker once, then idle until Locust stops the run."""
        if not self.finished:
            self.finished = True
            self.recorder.flush()
            for connection in self.idle:
                connection.close()
            done = Path(CONFIG["done_dir"])
            done.mkdir(parents=True, exist_ok=True)
            (done / f"{os.getpid()}-{id(self)}").touch()
        gevent.sleep(1.0)


class ClosedLoopUser(_OipUser):
    """Closed loop: send, wait for the reply, send again."""

    @task
    def infer(self) -> None:
        # Send back to back for a slice before handing back to Locust's task loop: its per-task
        # bookkeeping between two requests would otherwise idle the server a little more each time.
        # Other greenlets still run while each response is awaited.
        slice_end = time.monotonic_ns() + CLOSED_LOOP_SLICE_NS
        while not self.control.stopped():
            self.send(time.monotonic_ns())
            if time.monotonic_ns() >= slice_end:
                return
        self.finish()


class _GrpcMixin(_OipUser):
    """The OIP v2 gRPC transport in place of HTTP (``load.protocol: grpc``); timings and records as HTTP's."""

    abstract = True

    def on_start(self) -> None:
        super().on_start()
        self.wire = True  # our own transport: send() fires Locust's request event itself
        requests = [grpc_request(CONFIG["model"], body, headers) for body, headers in self.payloads]
        self.grpc = GrpcWire(CONFIG["grpc_target"], requests, float(CONFIG["request_timeout_s"]))

    def _exchange(self, index: int) -> tuple[int, int, Kind, int]:
        return self.grpc.call(index)

    def finish(self) -> None:
        if not self.finished:
            self.grpc.close()
        super().finish()


class OpenLoopUser(_OipUser):
    """Open loop: one scheduler per process sends at the intended instants of its share of the rate;
    at most ``max_in_flight`` requests are in flight (a late one still counts from its intended instant)."""

    concurrency = int(CONFIG["max_in_flight"])

    @task
    def schedule(self) -> None:
        if self.finished:
            self.finish()
            return
        pool = gevent.pool.Pool(int(CONFIG["max_in_flight"]))
        in_flight: dict[int, int] = {}
        origin_ns = time.monotonic_ns()
        for offset_ns in self._arrivals():
            due_ns = origin_ns + offset_ns
            if not self._sleep_until(due_ns):
                break
            flags = FLAG_WAITED_FOR_SLOT if pool.full() else 0
            pool.spawn(self._one, due_ns, flags, in_flight)
        self._drain(pool, in_flight)
        self.finish()

    def _arrivals(self) -> Any:
        runner = self.environment.runner
        index = int(getattr(runner, "worker_index", 0) or 0)
        schedulers = max(1, int(CONFIG["schedulers"]))
        end = CONFIG.get("end_rps")
        return arrival_offsets_ns(
            rate_rps=float(CONFIG["rate_rps"]) / schedulers,
            end_rps=None if end is None else float(end) / schedulers,
            hold_s=float(CONFIG.get("hold_s", 0.0)),
            ramp_s=float(CONFIG.get("ramp_s", 0.0)),
            arrival=CONFIG["arrival"],
            duration_s=float(CONFIG["max_duration_s"]),
            seed=int(CONFIG["seed"]) * 1000 + index,
        )

    def _sleep_until(self, due_ns: int) -> bool:
        """Sleep until ``due_ns``; False when the step was stopped meanwhile."""
        while not self.control.stopped():
            left_s = (due_ns - time.monotonic_ns()) / 1e9
            if left_s <= 0:
                return True
            gevent.sleep(min(left_s, MAX_SLEEP_S))
        return False

    def _one(self, due_ns: int, flags: int, in_flight: dict[int, int]) -> None:
        key = id(gevent.getcurrent())
        in_flight[key] = due_ns
        self.send(due_ns, flags)
        in_flight.pop(key, None)

    def _drain(self, pool: gevent.pool.Pool, in_flight: dict[int, int]) -> None:
        pool.join(timeout=float(CONFIG["drain_s"]))
        left = dict(in_flight)
        self.discard = True
        now = time.monotonic_ns()
        for due_ns in left.values():
            self.recorder.add(due_ns, due_ns, now, Kind.UNFINISHED)
        pool.kill(block=False)


class GrpcClosedLoopUser(_GrpcMixin, ClosedLoopUser):
    """ClosedLoopUser over gRPC."""

    abstract = False


class GrpcOpenLoopUser(_GrpcMixin, OpenLoopUser):
    """OpenLoopUser over gRPC."""

    abstract = False
