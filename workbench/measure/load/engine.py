"""The load engine: run a load profile against an OIP v2 endpoint with Locust and measure each step.

A step starts Locust (standalone, or a master and ``workers`` workers), waits for the first request,
lets the warm-up pass, then cuts the per-request records into windows until they settle (see
``windows``) or the step's maximum is reached, and stops the generator. While the windows run it
samples the generator's and the server's CPU and memory and scrapes the server's ``/metrics``.

- ``measure_served``: serve an artifact with ``serving_harness`` (a subprocess on a free loopback
  port) and measure it: what ``workbench run`` does for each variant.
- ``measure_endpoint``: measure any running OIP v2 endpoint (Triton, KServe, MLServer, ours).

Example::

    result = measure_served(artifact.path, settings, dataset, "recipes/profiles/concurrency.yaml",
                            model_name="digits", workdir=run_dir / "load" / variant.id)
    record.measurements += result.measurements
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from serving_harness.config import ServingConfig
from workbench.data.base import Dataset
from workbench.errors import MeasurementError
from workbench.measure import server_metrics
from workbench.measure.load.generator import LocustProcesses, LocustRun, UsageSampler
from workbench.measure.load.payloads import (
    PayloadFiles,
    dataset_batches,
    fetch_input_specs,
    npz_batches,
    random_batches,
    write_payloads,
)
from workbench.measure.load.sla import Probe, SlaOutcome, bracket, search_rate
from workbench.measure.load.windows import (
    RecordTail,
    StepFigures,
    Window,
    cut_windows,
    intended_window,
    settled,
    summarize,
)
from workbench.measure.result import Measurement
from workbench.measure.server import HarnessServer
from workbench.measure.usage import ProcessSampler, ProcessUsage
from workbench.recipe.profiles import (
    LoadProfile,
    SlaSearchProfile,
    StepPlan,
    closed_step,
    load_profile,
    max_step_s,
    open_step,
    plan_steps,
)

__all__ = ["ServedResult", "ServedStep", "Target", "measure_endpoint", "measure_served", "run_profile"]

logger = logging.getLogger(__name__)
Protocol = Literal["http", "grpc"]

POLL_S = 0.1  # the workbench shares the machine with the generator: it wakes rarely and does little
FLUSH_SLACK_NS = 300_000_000  # records reach the files within 100 ms of the response; wait a bit more
FIRST_REQUEST_TIMEOUT_S = 90.0  # Locust start-up (and workers connecting) on a busy machine
MAX_DRAIN_S = 5.0
MAX_OPEN_WINDOW_S = 5.0
SAMPLE_INTERVAL_S = 0.2
SATURATED_ADVICE = (
    "the load generator was saturated (a Locust process at >= {limit:.0f}% CPU) in step(s) {steps}: "
    "its figures are not trusted; add Locust workers (workbench load --workers N, or load.workers in the recipe)"
)


@dataclass(frozen=True)
class Target:
    """An OIP v2 endpoint and model; ``server`` when it is our harness (checked and sampled).

    ``grpc_target`` (``host:port``): send the load over gRPC there; ``url`` still answers ``/metrics``.
    """

    url: str
    model: str
    server: HarnessServer | None = None
    grpc_target: str | None = None


@dataclass(frozen=True)
class ServedStep:
    """One measured step: its report row and what does not fit a row."""

    measurement: Measurement
    extra: dict[str, Any]


@dataclass(frozen=True)
class ServedResult:
    """Every step of a profile, the SLA search's outcome (if any), and advice for the user."""

    steps: list[ServedStep]
    sla: SlaOutcome | None = None
    server_log: Path | None = None
    advice: list[str] = field(default_factory=list)

    @property
    def measurements(self) -> list[Measurement]:
        return [step.measurement for step in self.steps]

    def details(self) -> dict[str, Any]:
        """JSON-ready: per step extras (errors, server breakdown, CPU, windows), the SLA outcome, advice."""
        return {
            "steps": [{"step": s.measurement.case, **s.extra} for s in self.steps],  # each load step by its label
            "sla": self.sla.as_dict() if self.sla else None,
            "server_log": str(self.server_log) if self.server_log else None,
            "advice": self.advice,
        }


# --------------------------------------------------------------------------------------------------- entry points


def measure_served(
    artifact_path: Path,
    settings: ServingConfig,
    dataset: Dataset,
    profile: LoadProfile | Mapping[str, Any] | str | Path | None,
    *,
    model_name: str,
    workdir: Path,
    workers: int = 0,
    env: Mapping[str, str] | None = None,
    protocol: Protocol = "http",
) -> ServedResult:
    """Serve ``artifact_path`` with ``settings`` on a free loopback port and run ``profile`` against it,
    over ``protocol`` (``grpc``: the same server also serves gRPC, and the load goes there).

    Raises MeasurementError (with the server's log tail) when the server dies or never gets ready.
    """
    spec = load_profile(profile)
    payloads = write_payloads(dataset_batches(dataset, spec.batch_size), workdir / "payloads", binary=spec.binary)
    log_path = workdir / "server.log"
    grpc = protocol == "grpc"
    with HarnessServer(artifact_path, settings, name=model_name, log_path=log_path, env=env, grpc=grpc) as server:
        target = Target(url=server.url, model=model_name, server=server, grpc_target=server.grpc_target)
        result = run_profile(target, spec, payloads, workdir=workdir, workers=workers)
    return replace(result, server_log=log_path)


def measure_endpoint(
    url: str,
    *,
    model: str,
    profile: LoadProfile | Mapping[str, Any] | str | Path | None,
    workdir: Path,
    workers: int = 0,
    data: Path | None = None,
    batch_size: int | None = None,
    binary: bool | None = None,
) -> ServedResult:
    """Run ``profile`` against any OIP v2 endpoint; inputs come from ``data`` (npz) or are random,
    shaped by the model's metadata. ``batch_size`` and ``binary`` override the profile's."""
    spec = load_profile(profile)
    overrides = {k: v for k, v in {"batch_size": batch_size, "binary": binary}.items() if v is not None}
    spec = spec.model_copy(update=overrides) if overrides else spec
    if data is not None:
        batches = npz_batches(data, spec.batch_size)
    else:
        batches = random_batches(fetch_input_specs(url, model), spec.batch_size, seed=spec.seed)
    payloads = write_payloads(batches, workdir / "payloads", binary=spec.binary)
    return run_profile(Target(url=url.rstrip("/"), model=model), spec, payloads, workdir=workdir, workers=workers)


def run_profile(
    target: Target, profile: LoadProfile, payloads: PayloadFiles, *, workdir: Path, workers: int = 0
) -> ServedResult:
    """Run every step of ``profile`` (or its SLA search) against ``target``."""
    session = _Session(target, profile, payloads, workdir, workers)
    sla = session.search(profile) if isinstance(profile, SlaSearchProfile) else None
    if sla is None:
        for plan in plan_steps(profile):
            session.run(plan)
    return ServedResult(steps=session.steps, sla=sla, advice=_advice(session.steps, profile))


def _advice(steps: list[ServedStep], profile: LoadProfile) -> list[str]:
    saturated = [s.measurement.case for s in steps if "generator_saturated" in s.measurement.flags]
    advice = []
    if saturated:
        advice.append(SATURATED_ADVICE.format(limit=profile.generator_cpu_limit_percent, steps=", ".join(saturated)))
    if any("generator_behind" in s.measurement.flags for s in steps):
        advice.append("the generator sent requests late in some steps: add Locust workers or lower the rate")
    for message in advice:
        logger.warning(message)
    return advice


# ------------------------------------------------------------------------------------------------------ a session


class _Session:
    """The steps of one profile against one target."""

    def __init__(
        self, target: Target, profile: LoadProfile, payloads: PayloadFiles, workdir: Path, workers: int
    ) -> None:
        self.target = target
        self.profile = profile
        self.payloads = payloads
        self.workdir = workdir
        self.workers = workers
        self.steps: list[ServedStep] = []

    def run(self, plan: StepPlan, flags: tuple[str, ...] = ()) -> list[ServedStep]:
        """Run one step; a ramp gives one ServedStep per segment."""
        folder = self.workdir / f"{len(self.steps):02d}-{_slug(plan.label)}"
        observed = _StepRun(self, plan, folder).execute()
        made = observed.results(flags)
        self.steps.extend(made)
        return made

    def search(self, profile: SlaSearchProfile) -> SlaOutcome:
        low, high = bracket(profile, lambda: self._calibrate(profile))
        outcome = search_rate(profile, lambda rate: self._probe(profile, rate), low, high)
        self._mark_best(outcome)
        logger.info(
            "SLA search: %s rps meets %s <= %s ms", outcome.rate_rps, outcome.percentile, outcome.latency_ms_max
        )
        return outcome

    def _calibrate(self, profile: SlaSearchProfile) -> float:
        step = self.run(closed_step(profile.calibration_users), flags=("calibration",))[0]
        return step.measurement.throughput_rps

    def _probe(self, profile: SlaSearchProfile, rate_rps: float) -> Probe:
        step = self.run(replace(open_step(rate_rps, profile.arrival), label=f"sla {rate_rps:.1f}rps"))[0]
        why = _probe_failure(step, profile, rate_rps)
        step.measurement.flags.append("sla_fail" if why else "sla_pass")
        step.extra["sla_why"] = why
        return Probe(rate_rps=rate_rps, passed=not why, why=why)

    def _mark_best(self, outcome: SlaOutcome) -> None:
        for step in self.steps:
            if step.extra.get("offered_rps") == outcome.rate_rps and "sla_pass" in step.measurement.flags:
                step.measurement.flags.append("sla_best")


def _probe_failure(step: ServedStep, profile: SlaSearchProfile, rate_rps: float) -> str:
    """Why a probe missed the SLA ('' when it met it)."""
    m = step.measurement
    latency = m.latency_ms.get(profile.latency_percentile)
    if latency is None:
        return f"too few requests for a {profile.latency_percentile}"
    if latency > profile.latency_ms_max:
        return f"{profile.latency_percentile} {latency:.3f} ms > {profile.latency_ms_max} ms"
    if step.extra["error_rate"] > profile.max_error_rate:
        return f"error rate {step.extra['error_rate']:.2%} > {profile.max_error_rate:.2%}"
    if m.throughput_rps < profile.min_goodput * rate_rps:
        return f"goodput {m.throughput_rps:.1f} rps < {profile.min_goodput:.0%} of offered"
    return ""


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-")


# --------------------------------------------------------------------------------------------------------- a step


@dataclass
class _Observed:
    """What a step saw, before it becomes report rows."""

    plan: StepPlan
    profile: LoadProfile
    folder: Path
    records: np.ndarray
    windows: list[Window]
    settled: bool
    measure_from_ns: int
    generator: list[ProcessUsage]
    generator_places: list[str]  # where each generator process ran ("local", or a cluster node)
    server_usage: ProcessUsage | None
    server: dict[str, Any]
    offered_rps: float | None

    def results(self, flags: tuple[str, ...]) -> list[ServedStep]:
        if self.plan.is_ramp:
            return [self._row(label, figures, (*flags, "ramp"), rate) for label, figures, rate in self._segments()]
        return [self._row(self.plan.label, summarize(self.records, self.windows), flags, self.offered_rps)]

    def _segments(self) -> list[tuple[str, StepFigures, float]]:
        plan, count = self.plan, self.plan.segments
        span_ns = int(plan.ramp_s * 1e9 / count)
        end_rps = plan.end_rps or plan.rate_rps
        rows = []
        for i in range(count):
            start = self.measure_from_ns + i * span_ns
            window, chunk = intended_window(self.records, i, start, start + span_ns)
            figures = summarize(self.records, [window], pooled=chunk)
            mid_rps = plan.rate_rps + (end_rps - plan.rate_rps) * (i + 0.5) / count
            rows.append((f"{plan.label} [{i + 1}/{count}] ~{mid_rps:.0f}rps", figures, round(mid_rps, 3)))
        return rows

    def _row(self, label: str, figures: StepFigures, flags: tuple[str, ...], offered: float | None) -> ServedStep:
        profile = self.profile
        plan_flags = list(flags)
        if not self.settled and not self.plan.is_ramp:
            plan_flags.append("unsettled")
        if figures.requests < profile.min_requests:
            plan_flags.append("few_requests")
        if figures.error_rate > 0:
            plan_flags.append("errors")
        generator_cpu = max((u["cpu_percent_mean"] for u in self.generator), default=0.0)
        if generator_cpu >= profile.generator_cpu_limit_percent:
            plan_flags.append("generator_saturated")
        if self.plan.loop == "open" and figures.generator_behind:
            plan_flags.append("generator_behind")
        measurement = Measurement(
            mode="served",
            case=label,
            batch_size=profile.batch_size,
            concurrency=self.plan.users if self.plan.loop == "closed" else None,
            iterations=figures.requests,
            trials=figures.windows,
            latency_ms=figures.latency_ms,
            latency_ms_p50_std=figures.latency_ms_p50_std,
            throughput_rps=round(figures.throughput_rps, 3),
            throughput_rps_std=None if figures.throughput_rps_std is None else round(figures.throughput_rps_std, 3),
            throughput_rps_ci=figures.throughput_rps_ci,
            throughput_items_per_s=round(figures.throughput_rps * profile.batch_size, 3),
            flags=plan_flags,
            offered_rps=offered,
            error_rate=figures.error_rate,
            server={k: float(v) for k, v in self.server.items() if isinstance(v, int | float)},
            resources=self._resources(generator_cpu),
            samples=figures.samples,
        )
        return ServedStep(measurement=measurement, extra=self._extra(figures, generator_cpu, offered))

    def _resources(self, generator_cpu: float) -> dict[str, float]:
        usage = self.server_usage
        found = {
            "server_cpu_percent_mean": usage["cpu_percent_mean"] if usage else None,
            "server_rss_mb_max": usage["rss_mb_max"] if usage else None,
            "generator_cpu_percent_max": max((u["cpu_percent_max"] for u in self.generator), default=generator_cpu),
        }
        return {k: float(v) for k, v in found.items() if v is not None}

    def _extra(self, figures: StepFigures, generator_cpu: float, offered: float | None) -> dict[str, Any]:
        usage = self.server_usage
        return {
            "loop": self.plan.loop,
            "offered_rps": offered,
            "settled": self.settled,
            "error_rate": figures.error_rate,
            "errors": figures.errors,
            "send_lag_ms_p99": figures.send_lag_ms_p99,
            "late_share": figures.late_share,
            "server": self.server,
            "server_cpu_percent_mean": usage["cpu_percent_mean"] if usage else None,
            "server_cpu_percent_max": usage["cpu_percent_max"] if usage else None,
            "server_rss_mb_max": usage["rss_mb_max"] if usage else None,
            "generator_processes": len(self.generator),
            "generator_cpu_percent_mean": generator_cpu,
            "generator_cpu_percent_max": max((u["cpu_percent_max"] for u in self.generator), default=0.0),
            "generator_rss_mb_max": max((u["rss_mb_max"] for u in self.generator), default=0.0),
            "generator_workers": self._per_worker(),
            "windows": figures.window_table,
            "folder": str(self.folder),
        }

    def _per_worker(self) -> list[dict[str, Any]]:
        """Each generator process's CPU and where it ran; ``saturated`` names the ones the step flag blames."""
        limit = self.profile.generator_cpu_limit_percent
        return [
            {"where": where, **usage, "saturated": usage["cpu_percent_mean"] >= limit}
            for where, usage in zip(self.generator_places, self.generator, strict=True)
        ]


class _StepRun:
    """Start Locust for one step, watch its records, decide when it has settled, stop it."""

    def __init__(self, session: _Session, plan: StepPlan, folder: Path) -> None:
        self.session = session
        self.plan = plan
        self.profile = session.profile
        self.folder = folder
        self.tail = RecordTail(folder / "records")
        self.window_ns = int(self._window_s() * 1e9)
        self.drain_s = min(self.profile.request_timeout_s, MAX_DRAIN_S)

    def _window_s(self) -> float:
        """Open loop knows its rate: widen the windows so the settled ones can hold min_requests."""
        profile, plan = self.profile, self.plan
        if plan.loop == "closed" or plan.is_ramp:
            return profile.window_s
        wanted = profile.min_requests / (profile.min_windows * plan.rate_rps)
        return min(max(profile.window_s, wanted), max(MAX_OPEN_WINDOW_S, profile.window_s))

    def execute(self) -> _Observed:
        processes = LocustProcesses(self._locust_run(), env=dict(os.environ)).start()
        try:
            observed = self._observe(processes)
            (self.folder / "stop").touch()
            self._wait_done()  # in-flight requests finish (or are recorded unfinished): a ramp needs them
            self.tail.poll()
            observed.records = self.tail.records()
            return observed
        finally:
            (self.folder / "stop").touch()
            processes.stop()

    def _locust_run(self) -> LocustRun:
        config_path = self.folder / "locust.json"
        if self.folder.exists():  # a step re-run (a resumed variant) starts from nothing
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        config_path.write_text(_json(self._config()))
        users = self.plan.users if self.plan.loop == "closed" else self._schedulers()
        user_class = "ClosedLoopUser" if self.plan.loop == "closed" else "OpenLoopUser"
        return LocustRun(
            host=self.session.target.url,
            user_class=("Grpc" + user_class) if self.session.target.grpc_target else user_class,
            users=users,
            run_time_s=math.ceil(self._max_s() + self.drain_s + 15),
            config_path=config_path,
            log_dir=self.folder,
            workers=self.session.workers,
        )

    def _schedulers(self) -> int:
        return max(1, self.session.workers)

    def _max_s(self) -> float:
        if self.plan.is_ramp:
            return max_step_s(self.profile, self.plan)
        windows = max(self.profile.max_windows, math.ceil(self.profile.min_duration_s * 1e9 / self.window_ns))
        return self.profile.warmup_s + windows * self.window_ns / 1e9

    def _config(self) -> dict[str, Any]:
        plan, profile, folder = self.plan, self.profile, self.folder
        return {
            "infer_path": f"/v2/models/{self.session.target.model}/infer",
            "model": self.session.target.model,
            "grpc_target": self.session.target.grpc_target,
            "payload_bin": str(self.session.payloads.bin),
            "payload_index": str(self.session.payloads.index),
            "records_dir": str(folder / "records"),
            "done_dir": str(folder / "done"),
            "stop_file": str(folder / "stop"),
            "loop": plan.loop,
            "rate_rps": plan.rate_rps,
            "end_rps": plan.end_rps,
            "hold_s": profile.warmup_s if plan.is_ramp else 0.0,
            "ramp_s": plan.ramp_s,
            "arrival": plan.arrival,
            "schedulers": self._schedulers(),
            "max_duration_s": self._max_s() + 1.0,  # the workbench stops it first; this is a backstop
            "max_in_flight": profile.max_in_flight,
            "request_timeout_s": profile.request_timeout_s,
            "drain_s": self.drain_s,
            "seed": profile.seed,
            "transport": profile.transport if self.session.target.url.startswith("http://") else "locust",
            "blocking_socket": plan.loop == "closed" and plan.users <= self._schedulers(),
        }

    def _check(self, processes: LocustProcesses) -> None:
        server = self.session.target.server
        if server is not None:
            server.check_alive(f"during load step {self.plan.label!r}")
        processes.check_alive()

    def _observe(self, processes: LocustProcesses) -> _Observed:
        origin_ns = self._first_request(processes)
        measure_from = origin_ns + int(self.profile.warmup_s * 1e9)
        self._sleep_until(measure_from, processes)
        samplers = self._samplers(processes)
        before = self._scrape()
        windows, is_settled = self._watch(measure_from, processes)
        after = self._scrape()
        usage = [sampler.stop() for sampler in samplers]
        server_usage = usage.pop() if self.session.target.server is not None else None
        return _Observed(
            plan=self.plan,
            profile=self.profile,
            folder=self.folder,
            records=self.tail.records(),
            windows=windows,
            settled=is_settled,
            measure_from_ns=measure_from,
            generator=usage,
            generator_places=processes.load_places(),
            server_usage=server_usage,
            server=server_metrics.breakdown(before, after),
            offered_rps=None if self.plan.loop == "closed" else self.plan.rate_rps,
        )

    def _first_request(self, processes: LocustProcesses) -> int:
        deadline = time.monotonic() + FIRST_REQUEST_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check(processes)
            if self.tail.poll() or len(self.tail.records()):
                return int(self.tail.records()["intended"].min())
            time.sleep(POLL_S)
        raise MeasurementError(
            f"no request completed within {FIRST_REQUEST_TIMEOUT_S:.0f} s of starting Locust:\n{processes.log_tail()}"
        )

    def _sleep_until(self, instant_ns: int, processes: LocustProcesses) -> None:
        while time.monotonic_ns() < instant_ns:
            self._check(processes)
            time.sleep(min(POLL_S, max(0.0, (instant_ns - time.monotonic_ns()) / 1e9)))

    def _samplers(self, processes: LocustProcesses) -> list[UsageSampler]:
        samplers = processes.load_samplers(SAMPLE_INTERVAL_S)  # sampled where each one runs
        server = self.session.target.server
        if server is not None:
            samplers.append(ProcessSampler(server.pid, interval_s=SAMPLE_INTERVAL_S))
        for sampler in samplers:
            sampler.start()
        return samplers

    def _scrape(self) -> server_metrics.Scrape:
        return server_metrics.scrape(self.session.target.url, self.session.target.model)

    def _watch(self, measure_from: int, processes: LocustProcesses) -> tuple[list[Window], bool]:
        """Poll until the windows settle with enough requests, or the step's maximum is reached."""
        end_ns = measure_from + int((self._max_s() - self.profile.warmup_s) * 1e9)
        windows: list[Window] = []
        while True:
            self._check(processes)
            # relayed records come later; `until` is taken before the read, so what it covers is read
            until = time.monotonic_ns() - FLUSH_SLACK_NS - processes.record_delay_ns()
            self.tail.poll()
            if self.plan.is_ramp:
                if until >= end_ns:
                    return [], True
            elif measure_from + (len(windows) + 1) * self.window_ns <= until:  # a window completed
                records = self.tail.records()
                windows += cut_windows(records, measure_from, self.window_ns, until, first=len(windows))
                verdict = self._verdict(windows)
                if verdict is not None:
                    return verdict
            time.sleep(POLL_S)

    def _verdict(self, windows: list[Window]) -> tuple[list[Window], bool] | None:
        """(the windows to report, settled) once the step can stop; None to keep going."""
        profile = self.profile
        tail = _settled_tail(windows, profile.min_windows, profile.tolerance, profile.latency_tolerance)
        min_windows = max(profile.min_windows, math.ceil(profile.min_duration_s * 1e9 / self.window_ns))
        if tail and len(tail) >= min_windows and sum(w.ok + w.errors for w in tail) >= profile.min_requests:
            return tail, True
        if len(windows) >= round((self._max_s() - profile.warmup_s) * 1e9 / self.window_ns):
            return (tail, True) if tail and len(tail) >= min_windows else (windows, False)
        return None

    def _wait_done(self) -> None:
        expected = self.plan.users if self.plan.loop == "closed" else self._schedulers()
        done = self.folder / "done"
        deadline = time.monotonic() + self.drain_s + 2.0
        while time.monotonic() < deadline:
            if done.exists() and len(list(done.iterdir())) >= expected:
                return
            time.sleep(0.05)
        logger.debug("step %s: not every user reported done", self.plan.label)


def _settled_tail(windows: list[Window], count: int, tolerance: float, latency_tolerance: float) -> list[Window]:
    """The longest run of final windows that agree (at least ``count`` of them), or []."""
    if not settled(windows, count, tolerance, latency_tolerance):
        return []
    size = count
    while size < len(windows) and settled(windows[-(size + 1) :], size + 1, tolerance, latency_tolerance):
        size += 1
    return windows[-size:]


def _json(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2)
