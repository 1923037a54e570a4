"""Interleaved A/B: the baseline and the candidate served side by side and measured in alternation,
in one job on one machine.

A shared CI runner drifts (a neighbour's build, thermal limits, a noisy cache): two runs measured an
hour apart differ for reasons that are not the change under test. Here both servers are up at once
and each round measures one, then the other (ABBA order, so neither is always first); the gate then
compares the rounds pairwise, and whatever drifted between rounds divides out of each round's ratio.

A contender is a bundle directory (verified with ``serving_harness.bundle.load_bundle``, then served
as it ships with ``python -m serving_harness serve DIR``) or a model file served with given settings.
Each round runs the load profile (by default a short closed loop) against each.

Example::

    a = bundle_contender("baseline", Path("bundles/main"))
    b = model_contender("candidate", Path("model.onnx"), ServingConfig())
    run = measure_interleaved(a, b, rounds=6, workdir=Path("/tmp/ab"))
    result = gate(run.baseline, run.candidate, [parse_rule("latency_ms.p99:+10%")])
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from serving_harness.config import ServingConfig
from serving_harness.model_dir import load_model_dir, runtime_for
from workbench.errors import NotFoundError, UsageError
from workbench.gate.sources import Figure, Source
from workbench.measure.load.engine import ServedStep, Target, run_profile
from workbench.measure.load.payloads import PayloadFiles, fetch_input_specs, npz_batches, random_batches, write_payloads
from workbench.measure.server import HarnessServer
from workbench.metrics import CAUTION_FLAGS, UNTRUSTED_FLAGS, flag_set
from workbench.recipe.profiles import LoadProfile, load_profile
from workbench.report.schema import Measurement
from workbench.stats import round_order

__all__ = [
    "DEFAULT_PROFILE",
    "Contender",
    "InterleavedRun",
    "bundle_contender",
    "contender_payloads",
    "interleave_rounds",
    "measure_interleaved",
    "model_contender",
    "paired_sources",
    "serve_contender",
]

logger = logging.getLogger(__name__)

# Short steps: a round costs a few seconds per side (most of it Locust starting), and the rounds, not
# long steps, carry the statistics. 300 requests per step so each round has its own p99.
DEFAULT_PROFILE: dict[str, Any] = {
    "kind": "concurrency",
    "users": [2],
    "warmup_s": 0.5,
    "window_s": 0.5,
    "min_windows": 3,
    "max_windows": 6,
    "min_requests": 300,
}
# label → case (the profile step) → figure → one value per round (None: the round could not carry it)
RoundFigures = dict[str, dict[str, dict[str, list[float | None]]]]


@dataclass(frozen=True)
class Contender:
    """One side of the A/B: a model file and the settings it is served with."""

    label: str
    model_path: Path
    settings: ServingConfig
    model_name: str
    bundle: bool = False  # a bundle directory, served with ``serve DIR``


def model_contender(label: str, path: Path, settings: ServingConfig | None = None) -> Contender:
    """A model file (``.onnx``, or a torch artifact directory) served with ``settings``."""
    if not path.exists():
        raise NotFoundError(f"--{label}-model {path} does not exist")
    settings = settings or ServingConfig()
    if "name" not in settings.runtime.model_fields_set:
        runtime = settings.runtime.model_copy(update={"name": runtime_for(path)})
        settings = settings.model_copy(update={"runtime": runtime})
    return Contender(label=label, model_path=path, settings=settings, model_name="model")


def bundle_contender(label: str, directory: Path) -> Contender:
    """A bundle directory, served as it ships (``serve BUNDLE``) after its checksums are verified.

    Without ``serving_harness.bundle`` (an older harness) the directory is read as a model directory
    (artifact + serving.json) and served from its artifact with those settings.
    """
    if not directory.is_dir():
        raise NotFoundError(f"--{label}-bundle {directory} is not a directory")
    try:
        bundles = importlib.import_module("serving_harness.bundle")
    except ModuleNotFoundError:
        return _model_dir_contender(label, directory)
    try:
        loaded = bundles.load_bundle(directory)
    except (OSError, ValueError) as exc:  # BundleError is a ValueError
        raise UsageError(f"--{label}-bundle {directory}: {exc}") from None
    return Contender(label, directory, loaded.settings, str(loaded.name), bundle=True)


def _model_dir_contender(label: str, directory: Path) -> Contender:
    try:
        model, settings = load_model_dir(directory)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--{label}-bundle {directory}: {exc}") from None
    settings.setdefault("runtime", {}).setdefault("name", runtime_for(model.path))
    return Contender(label, model.path, ServingConfig.model_validate(settings), model.name)


class _BundleServer(HarnessServer):
    """The harness serving a bundle directory as it ships: its own name, settings, drift and fallback."""

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "serving_harness",
            "serve",
            str(self.model_path),
            "--host",
            self.host,
            "--port",
            "0",
        ]


@dataclass(frozen=True)
class InterleavedRun:
    """Both sides' per-round figures as gate sources (paired by round), and warnings."""

    baseline: Source
    candidate: Source
    rounds: int
    warnings: list[str]


def interleave_rounds(
    measure: Callable[[str, int], Mapping[str, Mapping[str, float | None]]], labels: Sequence[str], rounds: int
) -> RoundFigures:
    """Call ``measure(label, round)`` for each label in every round, in ``round_order`` (for two labels ABBA:
    the first leads in even rounds, the other in odd ones); collect case → figure → per-round values by label."""
    collected: RoundFigures = {label: {} for label in labels}
    for index in range(rounds):
        for label in round_order(labels, index):
            for case, figures in measure(label, index).items():
                per_case = collected[label].setdefault(case, {})
                for name, value in figures.items():
                    per_case.setdefault(name, []).append(value)
    return collected


def measure_interleaved(
    baseline: Contender,
    candidate: Contender,
    *,
    rounds: int,
    workdir: Path,
    profile: LoadProfile | Mapping[str, Any] | str | Path | None = None,
    data: Path | None = None,
    workers: int = 0,
) -> InterleavedRun:
    """Serve both contenders at once and run ``profile`` against each in turn, ``rounds`` times."""
    if rounds < 2:
        raise UsageError(f"--rounds {rounds}: an A/B needs at least 2 rounds (6 or more to be conclusive)")
    spec = load_profile(profile if profile is not None else DEFAULT_PROFILE)
    with ExitStack() as stack:
        servers = {c.label: stack.enter_context(serve_contender(c, workdir)) for c in (baseline, candidate)}
        payloads = contender_payloads(servers[baseline.label], baseline.model_name, spec, data, workdir)
        contenders = {c.label: c for c in (baseline, candidate)}
        flagged: list[str] = []

        def measure(label: str, index: int) -> dict[str, dict[str, float | None]]:
            logger.info("round %d: %s", index + 1, label)
            target = Target(url=servers[label].url, model=contenders[label].model_name, server=servers[label])
            result = run_profile(
                target, spec, payloads, workdir=workdir / f"round-{index:02d}-{label}", workers=workers
            )
            flagged.extend(_flags(label, index, result.steps))
            return {step.measurement.case: _round_figures(step.measurement) for step in result.steps}

        collected = interleave_rounds(measure, [baseline.label, candidate.label], rounds)
    base, cand = paired_sources(collected, baseline.label, candidate.label)
    base = replace(base, label=f"{baseline.model_path} (interleaved)")
    cand = replace(cand, label=f"{candidate.model_path} (interleaved)")
    return InterleavedRun(baseline=base, candidate=cand, rounds=rounds, warnings=flagged)


def serve_contender(contender: Contender, workdir: Path) -> HarnessServer:
    """The harness serving ``contender`` (a context manager: started on enter, stopped on exit)."""
    log = workdir / f"{contender.label}-server.log"
    kind = _BundleServer if contender.bundle else HarnessServer
    return kind(contender.model_path, contender.settings, name=contender.model_name, log_path=log)


def contender_payloads(
    server: HarnessServer, model: str, spec: LoadProfile, data: Path | None, workdir: Path
) -> PayloadFiles:
    """The same requests for both sides: from ``data`` (npz) or random, shaped by the baseline's metadata."""
    if data is not None:
        batches = npz_batches(data, spec.batch_size)
    else:
        batches = random_batches(fetch_input_specs(server.url, model), spec.batch_size, seed=spec.seed)
    return write_payloads(batches, workdir / "payloads", binary=spec.binary)


def _round_figures(m: Measurement) -> dict[str, float | None]:
    figures: dict[str, float | None] = {"throughput_rps": m.throughput_rps}
    figures.update({f"latency_ms_{k}": m.latency_ms.get(k) for k in ("p50", "p90", "p99", "mean")})
    return figures


def _flags(label: str, index: int, steps: Sequence[ServedStep]) -> list[str]:
    """Flags that make a round's figures untrustworthy (a saturated generator, errors, never settled)."""
    worrying = UNTRUSTED_FLAGS | CAUTION_FLAGS
    return [
        f"round {index + 1} {label} {step.measurement.case}: {', '.join(sorted(worrying & flag_set(step.measurement.flags)))}"
        for step in steps
        if worrying & flag_set(step.measurement.flags)
    ]


def paired_sources(collected: RoundFigures, baseline: str, candidate: str) -> tuple[Source, Source]:
    """Per-round values of two labels as gate sources paired by round; a figure that some round could
    not carry (None) is left empty on both sides, so the gate says so instead of pairing wrong rounds."""
    sides: tuple[dict[str, dict[str, Figure]], dict[str, dict[str, Figure]]] = ({}, {})
    for case, base_figures in collected[baseline].items():
        cand_figures = collected[candidate].get(case, {})
        sides[0][case], sides[1][case] = {}, {}
        for name in sorted(set(base_figures) | set(cand_figures)):
            a, b = base_figures.get(name, []), cand_figures.get(name, [])
            complete = len(a) == len(b) and all(v is not None for v in (*a, *b))
            sides[0][case][name] = Figure(values=tuple(float(v) for v in a if v is not None)) if complete else Figure()
            sides[1][case][name] = Figure(values=tuple(float(v) for v in b if v is not None)) if complete else Figure()
    return (
        Source(f"{baseline} (interleaved)", sides[0], kind="interleaved"),
        Source(f"{candidate} (interleaved)", sides[1], kind="interleaved"),
    )
