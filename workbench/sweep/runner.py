"""A run: recipe → variants → build → quality check → measure → report.

Error policy (after Olive's): a variant whose step or measurement fails for real (a WorkbenchError
such as BuildError or MeasurementError, or a third-party RuntimeError, ValueError, OSError…) is
recorded as a failed variant and the sweep goes on. Bad input (UsageError) and a programming error
(``is_programming_error``: a TypeError, AttributeError… raised in our code) stop the run and propagate.

Whatever ends a run leaves ``run.json`` true: ``complete``; ``failed`` with the error in its
summary; ``interrupted`` on SIGINT or SIGTERM (SIGTERM is raised as ``RunTerminated``, a
KeyboardInterrupt, so both unwind the same way and stop the harness and Locust on the way out).
One process writes a run at a time: it holds an exclusive ``flock`` on the run's lock file for the
run's life, and a second writer gets a UsageError naming it. Each finished variant is written at
once, so an interrupted run resumes without redoing it; a complete run is never rewritten.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from serving_harness.config import RuntimeSettings, ServingConfig
from serving_harness.runtimes import RuntimeUnavailable, create_runtime
from serving_harness.runtimes.base import Runtime
from workbench.artifact import DEFAULT_RUNTIME, Artifact, recorded_path
from workbench.data import Arrays, Dataset, arrays_digest, load_dataset
from workbench.data.metrics import compare_outputs, resolve_metric
from workbench.decide.cost import cheapest_on_pools
from workbench.decide.select import select_best
from workbench.errors import MissingDependencyError, UsageError, WorkbenchError, is_programming_error
from workbench.measure.inprocess import measure_inprocess
from workbench.measure.load.engine import measure_served
from workbench.metrics import column_name
from workbench.models import load_source_model
from workbench.models.base import SourceModel
from workbench.paths import cache_dir
from workbench.recipe.loader import recipe_folder, spec_hash
from workbench.recipe.profiles import LoadProfile, load_profile
from workbench.recipe.spec import Recipe
from workbench.registry import recipe_imports
from workbench.report.html import write_report_html
from workbench.report.render import render_markdown
from workbench.report.rundir import ReportStore, RunDir
from workbench.report.schema import ArtifactInfo, Measurement, VariantRecord
from workbench.report.table import records_to_frame
from workbench.steps.base import STEPS, StepContext
from workbench.sweep.cache import build
from workbench.sweep.quality import Reference, quality_check, run_dataset, score
from workbench.sweep.space import Variant, expand, with_runtime
from workbench.sweep.strategies import Search, make_search

if TYPE_CHECKING:
    from workbench.sweep.executors import Executor

logger = logging.getLogger(__name__)
CALIBRATION_LIMIT = 512  # held-out samples handed to static quantization (its calibration_samples picks)

# Called as hook(event, payload): "plan" {total, done, run, complete}, "variant" {id}, "done" {record}.
ProgressHook = Callable[[str, dict[str, Any]], None]


class RunTerminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is so that it unwinds as Ctrl-C does (children stopped, status
    ``interrupted``). A KeyboardInterrupt, so whatever handles Ctrl-C handles it too."""

    exit_code = 128 + signal.SIGTERM


@dataclass(frozen=True)
class Workspace:
    """What every variant of a run shares."""

    recipe: Recipe
    source: SourceModel
    reference: Reference
    context: StepContext
    cache: Path
    run_path: Path | None = None
    profile: LoadProfile | None = None


def run_recipe(
    recipe: Recipe,
    *,
    reports: Path | str = "reports",
    resume: bool | str = False,
    hook: ProgressHook | None = None,
    cluster: str | None = None,
) -> RunDir:
    """Run a recipe end to end and return its run folder. ``resume`` is True (the newest
    unfinished run of this exact recipe) or a run reference. ``cluster`` runs the variants as Ray
    tasks (``local:N``, ``ray://host:port``, ``auto``; see ``workbench.sweep.executors``); None: here.

    A run that ends any other way than ``complete`` raises (after recording ``failed`` or
    ``interrupted``); resuming a complete run changes nothing and returns it. Raises UsageError
    when another process is writing the run.
    """
    notify = hook or _ignore
    with (
        _sigterm_interrupts(),
        recipe_imports(recipe_folder(recipe)),
        _opened(ReportStore(reports), recipe, resume) as run,
    ):
        if run.read_envelope().status == "complete":  # a finished run is never rewritten
            done = len(run.read_variants())
            notify("plan", {"total": done, "done": done, "run": run, "complete": True})
            return run
        _sweep(run, recipe, notify, cluster)
        return finalize(run, recipe)


def _ignore(event: str, payload: dict[str, Any]) -> None:
    """The hook when the caller gives none."""


def _sweep(run: RunDir, recipe: Recipe, notify: ProgressHook, cluster: str | None = None) -> None:
    """Evaluate every variant the search asks for that the run has not finished yet."""
    from workbench.sweep.executors import on_pools, open_executor  # the executors import this module

    variants = on_pools(expand(recipe), recipe)
    search = make_search(recipe, variants)
    finished = {record.variant: record for record in run.read_variants()}
    for earlier in variants:  # replay what an interrupted run already measured
        if earlier.id in finished:
            search.tell(earlier, finished[earlier.id])
    done = len(finished.keys() & {v.id for v in variants})
    notify("plan", {"total": search.budget, "done": done, "run": run, "complete": False})
    workspace = replace(_prepare(recipe), run_path=run.path, profile=_load_profile(recipe))
    with open_executor(cluster, workspace) as executor:
        _drive(search, executor, run, notify, done)


def _drive(search: Search, executor: Executor, run: RunDir, notify: ProgressHook, done: int) -> None:
    """Keep the executor's slots full with what the search asks for, within its budget (``done`` variants
    already count), and record each variant as it finishes. Locally one slot: ask, evaluate, write, tell."""
    in_flight = 0
    while True:  # bounded: each pass submits or collects at least one variant of a finite budget
        while in_flight < executor.slots and done + in_flight < search.budget:
            if (variant := search.ask()) is None:
                break
            notify("variant", {"id": variant.id})
            executor.submit(variant)
            in_flight += 1
        if not in_flight:
            return
        for variant, record in executor.finished():
            run.write_variant(record)
            search.tell(variant, record)
            notify("done", {"record": record})
            in_flight, done = in_flight - 1, done + 1


@contextmanager
def _recording_outcome(run: RunDir) -> Iterator[None]:
    """Leave run.json true however the run ends: ``interrupted`` (SIGINT, SIGTERM) or ``failed``
    with its error; the exception goes on to the caller either way."""
    try:
        yield
    except KeyboardInterrupt as exc:
        run.set_status("interrupted", {"stopped_by": "SIGTERM" if isinstance(exc, RunTerminated) else "SIGINT"})
        raise
    except BaseException as exc:
        if run.read_envelope().status != "complete":  # it failed after finishing (a report page): keep it
            run.set_status("failed", {"error": _error_line(exc), "error_type": type(exc).__name__})
        raise


def _error_line(exc: BaseException) -> str:
    """A WorkbenchError's own message (written for users); the type and message of anything else."""
    text = str(exc) if isinstance(exc, WorkbenchError) else f"{type(exc).__name__}: {exc}"
    return text.strip() or type(exc).__name__


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While the run is in progress, SIGTERM raises RunTerminated where the run is.

    Only the first SIGTERM: a second one would cut short the clean-up the first started (a child
    left behind by an impatient sender is still killed by the kernel, see measure.children). Python
    runs handlers in the main thread only, so elsewhere (a notebook's worker thread) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            raise RunTerminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _opened(store: ReportStore, recipe: Recipe, resume: bool | str) -> Iterator[RunDir]:
    """The run to write (resumed, or new with its envelope written), locked for this process; however
    the block ends, run.json says how (see ``_recording_outcome``). A complete run is only read."""
    digest = spec_hash(recipe)
    found = _resumed(store, recipe, digest, resume)
    if found is not None and found.read_envelope().status == "complete":
        yield found  # only read from here on: no lock taken, not a byte written
        return
    run = found or store.new_run(recipe.name)
    with run.writer_lock():
        if found is None:
            run.start(digest, recipe.model_dump(mode="json"))
        elif run.read_envelope().status != "complete":
            _reopen(run)
        with _recording_outcome(run):
            yield run


def _resumed(store: ReportStore, recipe: Recipe, digest: str, resume: bool | str) -> RunDir | None:
    if isinstance(resume, str):
        run = store.find(resume)
        if run.read_envelope().spec_hash != digest:
            raise UsageError(f"run {run.run_id} was made from a different recipe (spec hash differs); start a new run")
        return run
    if resume and (found := store.find_resumable(recipe.name, digest)):
        logger.info("resuming %s", found.path)
        return found
    return None


def _reopen(run: RunDir) -> None:
    """A resumed run is in progress again, and its status says so until it ends."""
    envelope = run.read_envelope()
    run.write_envelope(envelope.model_copy(update={"status": "running", "finished": None, "summary": {}}))


def _prepare(recipe: Recipe) -> Workspace:
    cache = cache_dir()
    source = load_source_model(recipe.model, cache)
    dataset = load_dataset(recipe.data, recipe.model, cache)
    if recipe.data.limit:
        dataset = dataset.take(recipe.data.limit)
    runtime_settings = RuntimeSettings(name=DEFAULT_RUNTIME[source.artifact.format], intra_op_threads=0)
    runtime = _load_runtime(source.artifact, ServingConfig(runtime=runtime_settings))
    outputs = run_dataset(runtime, dataset, recipe.measure.eval_batch_size)
    metric = resolve_metric(recipe.data.metric, outputs, dataset.labels)  # names the output it scores
    baseline = metric.score(outputs, outputs, dataset.labels)
    reference = Reference(dataset=dataset, outputs=outputs, metric=metric, baseline=float(baseline))
    sample = dataset.batch(0, 2)
    calibration = _calibration_batches(dataset, recipe.measure.eval_batch_size, warn=_calibrates(recipe))
    context = StepContext(
        sample_inputs=sample,
        dynamic_axes=source.dynamic_axes,
        output_names=tuple(spec.name for spec in source.outputs),
        calibration_inputs=calibration,
        calibration_held_out=dataset.calibration is not None,
        calibration_digest=arrays_digest(calibration),
    )
    return Workspace(recipe=recipe, source=source, reference=reference, context=context, cache=cache)


def _calibrates(recipe: Recipe) -> bool:
    """Whether any pipeline has a step that calibrates on data (quantize.ort_static)."""
    steps = (step for name in recipe.search.pipelines for step in recipe.search.steps_of(name))
    return any(getattr(STEPS.get(step.name), "uses_calibration", False) for step in steps)


def _calibration_batches(dataset: Dataset, batch_size: int, *, warn: bool = True) -> tuple[Arrays, ...]:
    """Held-out samples for static quantization (up to CALIBRATION_LIMIT); the evaluation samples if none
    (``warn``: say so, when a step will calibrate on them)."""
    if dataset.calibration is None:
        if warn:
            logger.warning(
                "the data has no held-out samples, so static quantization calibrates on the evaluation samples "
                "(set data.limit below the data's size to keep the rest for calibration)"
            )
        held_out = dataset
    else:
        held_out = Dataset(dataset.calibration).take(CALIBRATION_LIMIT)
    return tuple(held_out.batches(batch_size))


def _load_profile(recipe: Recipe) -> LoadProfile | None:
    """The recipe's load profile when served load is on: a mapping, a file, or a name in recipes/profiles/."""
    return load_profile(recipe.load.profile) if recipe.load.enabled else None


def _settings_for(variant: Variant, artifact: Artifact) -> ServingConfig:
    return with_runtime(variant.serving, DEFAULT_RUNTIME[artifact.format])


def _load_runtime(artifact: Artifact, settings: ServingConfig) -> Runtime:
    runtime = create_runtime(settings.runtime.name)
    try:
        runtime.load(artifact.path, settings.runtime)
    except RuntimeUnavailable as exc:
        raise MissingDependencyError(str(exc)) from exc
    return runtime


def evaluate_variant(variant: Variant, workspace: Workspace) -> VariantRecord:
    """Build, score and measure one variant; failures come back as a failed record."""
    built = build_variant(variant, workspace)
    return built if isinstance(built, VariantRecord) else measure_built(built, workspace)


@dataclass(frozen=True)
class Built:
    """A variant whose build succeeded: its artifact, its serving settings, and the record fields so far."""

    base: dict[str, Any]
    artifact: Artifact
    settings: ServingConfig


def build_variant(variant: Variant, workspace: Workspace) -> Built | VariantRecord:
    """Build one variant (cached); a failed build comes back as its failed record."""
    base: dict[str, Any] = {
        "variant": variant.id,
        "pipeline": variant.pipeline,
        "is_baseline": variant.is_baseline,
        "steps": list(variant.steps),
    }
    started = time.perf_counter()
    try:
        artifact = build(workspace.source.artifact, variant.steps, workspace.context, workspace.cache)
    except Exception as exc:
        if stops_the_run(exc):
            raise
        return _failed(base, variant, exc, time.perf_counter() - started)
    build_s = time.perf_counter() - started
    settings = _settings_for(variant, artifact)
    base.update(
        serving=settings,
        serving_label=settings.describe(),
        runtime=settings.runtime.name,
        artifact=ArtifactInfo(
            path=recorded_path(artifact.path, workspace.cache),  # no machine's folder in a run
            format=artifact.format,
            size_bytes=artifact.size_bytes,
            content_hash=artifact.content_hash,
        ),
        lineage=list(artifact.lineage),
        build_figures=artifact.figures,
        build_s=build_s,
    )
    return Built(base, artifact, settings)


def measure_built(built: Built, workspace: Workspace) -> VariantRecord:
    """Score and measure a built variant; failures come back as a failed record."""
    base, variant = built.base, built.base["variant"]
    try:
        return _score_and_measure(base, built.artifact, built.settings, workspace)
    except WorkbenchError as exc:
        if stops_the_run(exc):
            raise
        return VariantRecord(**base, status="failed", reason=_reason(exc), error=str(exc))
    except Exception as exc:  # a runtime crash on this variant (ORT, torch): record it, keep sweeping
        if stops_the_run(exc):
            raise
        logger.debug("variant %s crashed", variant, exc_info=True)
        return VariantRecord(
            **base, status="failed", reason=f"{type(exc).__name__}: {exc}"[:200], error=traceback.format_exc()
        )


def _reason(exc: Exception) -> str:
    """A failed variant's one line: a WorkbenchError's first line, else the type and message."""
    return _error_line(exc).splitlines()[0][:200]


def stops_the_run(exc: Exception) -> bool:
    """Bad input and programming errors stop the run; any other failure is this variant's alone."""
    return isinstance(exc, UsageError) or is_programming_error(exc)


def _failed(base: dict[str, Any], variant: Variant, exc: Exception, build_s: float) -> VariantRecord:
    settings = variant.serving
    return VariantRecord(
        **base,
        serving=settings,
        serving_label=settings.describe(),
        runtime=settings.runtime.name,
        status="failed",
        reason=_reason(exc),
        error="".join(traceback.format_exception(exc)),
        build_s=build_s,
    )


def _score_and_measure(
    base: dict[str, Any], artifact: Artifact, settings: ServingConfig, workspace: Workspace
) -> VariantRecord:
    runtime = _load_runtime(artifact, settings)
    reference = workspace.reference
    outputs = run_dataset(runtime, reference.dataset, workspace.recipe.measure.eval_batch_size)
    quality = score(outputs, reference, compare_outputs(outputs, reference.outputs))
    rejected = quality_check(quality, workspace.recipe.constraints)
    if rejected:
        return VariantRecord(**base, status="rejected", reason=rejected, quality=quality)
    measurements = [_inprocess(runtime, reference, b, workspace.recipe) for b in workspace.recipe.measure.batch_sizes]
    del runtime  # free its session (and ORT's spinning threads) before the served copy starts
    if workspace.profile is not None and (missed := _latency_bound_missed(measurements, workspace.recipe)):
        return VariantRecord(**base, status="rejected", reason=missed, quality=quality, measurements=measurements)
    if workspace.profile is not None and workspace.run_path is not None:
        served = _served(base["variant"], artifact, settings, workspace.profile, RunDir(workspace.run_path), workspace)
        measurements += served
    return VariantRecord(**base, status="ok", quality=quality, measurements=measurements)


def _latency_bound_missed(measurements: list[Measurement], recipe: Recipe) -> str | None:
    """Prune before serving: a latency bound that even the fastest in-process call misses cannot be met
    once HTTP, queueing and the load are added."""
    for metric, bound in recipe.constraints.items():
        column = column_name(metric)
        if not column.startswith("latency_ms_") or bound.max is None:
            continue
        key = column.removeprefix("latency_ms_")
        figures = [m.latency_ms.get(key) for m in measurements]
        best = min((f for f in figures if f is not None), default=None)
        if best is not None and best > bound.max:
            return f"{metric}={best:.4g} > {bound.max:g} already in-process: not served"
    return None


def _served(
    variant: str,
    artifact: Artifact,
    settings: ServingConfig,
    profile: LoadProfile,
    run: RunDir,
    workspace: Workspace,
) -> list[Measurement]:
    """Serve the variant with the real harness in a subprocess and drive it with Locust.

    Per-step detail (windows, errors, batch size distribution, CPU) goes to ``load/<variant>.json``;
    the server's log and Locust's records stay in ``load/<variant>/``. A server that dies raises
    MeasurementError with its log tail, which fails this variant only.
    """
    workdir = run.load_workdir(variant)
    result = measure_served(
        artifact.path,
        settings,
        workspace.reference.dataset,
        profile,
        model_name=workspace.recipe.model.name or workspace.recipe.name,
        workdir=workdir,
        workers=workspace.recipe.load.workers,
        protocol=workspace.recipe.load.protocol,
    )
    details = {"variant": variant, "profile": profile.model_dump(mode="json"), **result.details()}
    _paths_relative_to_run(details, run.path)
    run.write_load_details(variant, details)
    return result.measurements


def _paths_relative_to_run(details: dict[str, Any], run_path: Path) -> None:
    """Record the load folders and the server log relative to the run folder: a run reads the same elsewhere."""
    for step in details["steps"]:
        if step.get("folder"):
            step["folder"] = recorded_path(Path(step["folder"]), run_path)
    if details.get("server_log"):
        details["server_log"] = recorded_path(Path(details["server_log"]), run_path)


def _inprocess(runtime: Runtime, reference: Reference, batch_size: int, recipe: Recipe) -> Measurement:
    result = measure_inprocess(runtime, reference.dataset, batch_size, recipe.measure)
    return Measurement(
        mode="inprocess",
        case=f"b{batch_size}",
        batch_size=batch_size,
        iterations=result.iterations,
        trials=result.trials,
        latency_ms=result.latency_ms,
        latency_ms_p50_std=result.latency_ms_p50_std,
        throughput_rps=round(result.throughput_rps, 3),
        throughput_rps_std=round(result.throughput_rps_std, 3),
        throughput_rps_ci=result.throughput_rps_ci,
        throughput_items_per_s=round(result.throughput_items_per_s, 3),
        flags=["noisy"] if result.noisy else [],
        samples=result.samples,
    )


def finalize(run: RunDir, recipe: Recipe) -> RunDir:
    """Write results.parquet and report.md, pick the best variant, mark the run complete."""
    records = run.read_variants()
    frame = records_to_frame(run.run_id, records)
    run.write_results(frame)
    best = select_best(frame, recipe.constraints, recipe.objective)
    summary: dict[str, Any] = (
        {"best": best.variant, "reason": best.reason, "objective": best.metric, "value": best.value}
        if best
        else {"best": None, "reason": "no variant met every constraint"}
    )
    if recipe.cluster is not None and (cheapest := cheapest_on_pools(frame, recipe)) is not None:
        summary["cheapest"] = cheapest  # the pool and variant that meet the constraints for the least per 1M
    run.set_status("complete", summary)
    run.write_markdown(render_markdown(run.read_envelope(), frame, records))
    try:
        write_report_html(run)  # report.html beside report.md: the same tables plus embedded plots
    except Exception:  # the figures are already saved; a plotting bug must not lose the run
        logger.warning("report.html could not be written (`workbench report open` retries)", exc_info=True)
    return run
