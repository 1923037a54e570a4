"""The ``workbench`` command. The one place that turns a WorkbenchError into a message and an exit
code (1, or 2 for bad input); ``--debug`` shows the traceback instead."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from workbench.errors import UsageError, WorkbenchError

app = typer.Typer(
    help=(
        "Benchmark, optimize and ship ML inference.\n\n"
        "Start with `workbench run recipes/digits-cpu.yaml`: it builds every variant the recipe names, "
        "checks its accuracy against the fp32 source, measures latency and throughput, and writes a "
        "versioned report under reports/<recipe>/<run-id>/."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
report_app = typer.Typer(help="Read the versioned reports under reports/.", no_args_is_help=True)
app.add_typer(report_app, name="report")

# Piped output (CI logs, `| less`) is not cut to 80 columns: tables keep whole run ids and figures.
console = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
_state: dict[str, bool] = {"debug": os.environ.get("WORKBENCH_DEBUG") == "1"}

ReportsOpt = Annotated[Path, typer.Option("--reports", help="Root folder of the report store.")]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
) -> None:
    _state["debug"] = _state["debug"] or debug
    logging.basicConfig(
        level=logging.DEBUG if _state["debug"] else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="A recipe YAML file, e.g. recipes/digits-cpu.yaml.")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a recipe key: --set measure.trials=3 (value read as YAML). Repeatable."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish the newest unfinished run of this exact recipe.")
    ] = False,
    run_ref: Annotated[str | None, typer.Option("--run", help="With --resume: the run to finish.")] = None,
    served: Annotated[
        bool | None,
        typer.Option("--load/--no-load", help="Serve each variant and load it with Locust (default: the recipe's)."),
    ] = None,
    load_workers: Annotated[
        int | None,
        typer.Option(
            "--load.workers", help="Locust worker processes (0: one local runner). Same as --set load.workers=N."
        ),
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            help="Run the variants as Ray tasks: local:N (a local N-node cluster), ray://host:port, or auto. "
            "Needs the [ray] extra.",
        ),
    ] = None,
    targets: Annotated[
        str | None,
        typer.Option(
            "--targets", help="Hardware pools to measure every variant on: cpu-small,cpu-large (cluster.targets)."
        ),
    ] = None,
    reports: ReportsOpt = Path("reports"),
) -> None:
    """Build, check and measure every variant of RECIPE; write a report and print the table.

    With `load.enabled` (or --load), each variant that passes the quality check is also served by
    serving_harness in a subprocess and driven by Locust with the recipe's load profile.

    Interrupt it at any time (Ctrl-C, or SIGTERM): it stops the server and Locust, marks the run
    interrupted, and `--resume` picks up where it stopped without redoing the variants that finished.
    Exit status: 0 done (or the run was already complete: it is never rewritten), 1 error, 2 bad
    input or the run is being written by another process, 130 Ctrl-C, 143 SIGTERM.
    """
    from workbench.recipe.loader import load_recipe

    overrides = list(set_ or [])
    if served is not None:
        overrides.append(f"load.enabled={str(served).lower()}")
    if load_workers is not None:
        overrides.append(f"load.workers={load_workers}")
    if targets is not None:  # the recipe's prices for the pools it names, none for the others
        overrides.append(f"cluster.targets={_targets_override(recipe, overrides, targets)}")
    spec = load_recipe(recipe, overrides)
    from workbench.sweep.runner import run_recipe  # torch, ORT, Locust: only once the recipe is known to be good

    opened: dict[str, Any] = {}  # the run, once the runner has opened it (for the interrupt message)
    try:
        with _progress() as progress:
            hook = _progress_hook(progress, opened)
            run_dir = run_recipe(spec, reports=reports, resume=run_ref or resume, hook=hook, cluster=cluster)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (RunTerminated): the run is marked interrupted
        err.print(_interrupted_message(recipe, opened.get("run"), reports), highlight=False, soft_wrap=True)
        raise typer.Exit(getattr(exc, "exit_code", 130)) from None
    _show_run(run_dir.path)


def _targets_override(recipe: Path, overrides: list[str], targets: str) -> str:
    """``--targets a,b`` as a cluster.targets value (JSON, which the override reads as YAML), keeping prices."""
    from workbench.recipe.loader import load_recipe

    names = [name.strip() for name in targets.split(",") if name.strip()]
    if not names:
        raise UsageError("--targets: name at least one pool, e.g. --targets cpu-small,cpu-large")
    known = load_recipe(recipe, overrides).cluster
    pools = known.targets if known is not None else {}
    return json.dumps({name: pools[name].model_dump() if name in pools else {} for name in names})


def _interrupted_message(recipe: Path, run_dir: Any, reports: Path) -> str:
    """What an interrupted `workbench run` prints: which run stopped and the command that finishes it."""
    where = f" --reports {reports}" if reports != Path("reports") else ""
    if run_dir is None:
        return f"interrupted before the run started; `workbench run {recipe}{where}` starts it again"
    label = f"{run_dir.recipe_name}/{run_dir.run_id}"
    command = f"workbench run {recipe} --resume --run {label}{where}"
    return f"interrupted: run {label} stopped (status: interrupted); `{command}` finishes it"


def _status_line(run_dir: Any) -> str:
    """How a run that is not complete stands, in words: failed (and why), interrupted, or running
    (with the pid writing it, or none: killed, and how to finish it)."""
    envelope = run_dir.read_envelope()
    label = f"{run_dir.recipe_name}/{run_dir.run_id}"
    finish = f"`workbench run RECIPE --resume --run {label}` finishes it"
    if envelope.status == "failed":
        return f"[bold red]run failed:[/] {envelope.summary.get('error', 'no error recorded')}"
    if envelope.status == "interrupted":
        return f"[bold yellow]interrupted[/] ({envelope.summary.get('stopped_by', 'stopped')}): {finish}"
    pid = run_dir.writer_pid()
    if pid is None:
        return f"[bold yellow]running, but no process is writing it[/] (killed?): {finish}"
    return f"[bold]running[/]: process {pid} is writing it"


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def _progress_hook(progress: Progress, opened: dict[str, Any]) -> Any:
    task_ids: dict[str, Any] = {}

    def hook(event: str, payload: dict[str, Any]) -> None:
        if event == "plan":
            opened["run"] = payload["run"]
            done = f"({payload['done']} of {payload['total']} variants already done)"
            if payload.get("complete"):
                done = "is complete: nothing to do (a finished run is never rewritten)"
            err.print(f"run [bold]{payload['run'].path}[/] {done}")
            task_ids["sweep"] = progress.add_task("variants", total=payload["total"], completed=payload["done"])
        elif event == "variant":
            progress.update(task_ids["sweep"], description=payload["id"])
        elif event == "done":
            record = payload["record"]
            if record.status != "ok":
                progress.console.print(f"  [yellow]{record.variant}: {record.status}[/] — {record.reason}")
            progress.advance(task_ids["sweep"])

    return hook


def _show_run(path: Path) -> None:
    from workbench.report.render import summary_rows
    from workbench.report.rundir import RunDir
    from workbench.report.terminal import results_renderables

    run_dir = RunDir(path)
    envelope = run_dir.read_envelope()
    title = f"{envelope.recipe_name} · {envelope.run_id} · {envelope.status}"
    for part in results_renderables(title, summary_rows(run_dir.read_results()), width=console.width):
        console.print(part)
    summary = envelope.summary
    if envelope.status != "complete":
        console.print(_status_line(run_dir), highlight=False, soft_wrap=True)
    elif summary.get("best"):
        console.print(f"[bold green]best:[/] {summary['best']} — {summary['reason']}")
    elif summary:
        console.print(f"[bold yellow]no selection:[/] {summary.get('reason')}")
    console.print(f"report: {run_dir.markdown_path}")
    html = run_dir.html_path
    console.print(f"html: {html}" if html.exists() else f"html: not written yet (`workbench report open {path}`)")


@report_app.command("list")
def report_list(
    recipe: Annotated[str | None, typer.Option("--recipe", help="Only this recipe's runs.")] = None,
    reports: ReportsOpt = Path("reports"),
) -> None:
    """List runs, oldest first; an unreadable run is listed and marked, the others still show."""
    from workbench.report.rundir import ReportStore

    table = Table("run", "created", "status", "variants", "best", header_style="bold")
    for run_dir in ReportStore(reports).runs(recipe):
        table.add_row(*_run_cells(run_dir))
    console.print(table)


def _run_cells(run_dir: Any) -> tuple[str, ...]:
    """One row of `report list`: a broken file marks its run ("unreadable: why") instead of hiding every run."""
    from workbench.errors import CorruptRunError

    def unreadable(exc: CorruptRunError) -> str:
        return f"unreadable: {os.path.relpath(exc.path, run_dir.path)}: {exc.problem}"

    try:
        envelope = run_dir.read_envelope()
    except CorruptRunError as exc:
        return run_dir.label, "?", unreadable(exc), "?", "–"
    status, variants = envelope.status, "?"
    if status == "running" and run_dir.writer_pid() is None:
        status = "running? no process is writing it (killed: --resume finishes it)"
    try:
        variants = str(len(run_dir.finished_variants()))
    except CorruptRunError as exc:
        status = f"{status}; {unreadable(exc)}"
    best = str(envelope.summary.get("best") or "–")
    return run_dir.label, f"{envelope.created:%Y-%m-%d %H:%M}", status, variants, best


@report_app.command("show")
def report_show(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, recipe/run-id, a path, or 'latest'.")],
    reports: ReportsOpt = Path("reports"),
) -> None:
    """Print a run's results table, and how the run ended when it is not complete.

    Exit status 1 for a failed run with no results (nothing to show but its error).
    """
    from workbench.report.rundir import ReportStore

    run_dir = ReportStore(reports).find(run_ref)
    _show_run(run_dir.path)
    if run_dir.read_envelope().status == "failed" and not run_dir.read_variants():
        raise typer.Exit(1)


@report_app.command("schema")
def report_schema() -> None:
    """Print the recipe JSON Schema (for editors and validation)."""
    from workbench.recipe.loader import recipe_json_schema

    sys.stdout.write(json.dumps(recipe_json_schema(), indent=2) + "\n")


@app.command("history")
def history_command(
    recipe: Annotated[str | None, typer.Argument(help="A recipe name (default: every recipe).")] = None,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", "-m", help="Metric column, e.g. latency_ms.p99. Repeatable.")
    ] = None,
    variant: Annotated[list[str] | None, typer.Option("--variant", help="Only these variants. Repeatable.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write a static site here (index.html + plots).")] = None,
    reports: ReportsOpt = Path("reports"),
) -> None:
    """Every run on a timeline per variant × case × metric × machine, with its change points (ruptures)."""
    from workbench.report.history import DEFAULT_METRICS, change_points, load_history, regressions_at_head
    from workbench.report.history_site import write_site

    history = load_history(reports, recipe, metrics=metric or DEFAULT_METRICS, variants=variant)
    table = Table("series", "machine", "points", "last", "change points (commit range)", header_style="bold")
    for series in history.series:
        key, worse_now = series.key, regressions_at_head(series)
        changes = ", ".join(c.describe() for c in change_points(series)) or "–"
        name = f"{key.recipe} · {key.variant} · {key.case} · {key.metric}"
        last = f"{series.points[-1].value:.4g}"
        table.add_row(
            name, key.hardware, str(len(series.points)), last, changes, style="bold red" if worse_now else None
        )
    console.print(table if history.series else f"no runs with results under {reports}/")
    if out is not None:
        console.print(f"site: {write_site(history, out)}")


@app.command()
def validate(recipes: Annotated[list[Path], typer.Argument(help="Recipe files to check.")]) -> None:
    """Check recipes without running them: schema, extends, step names and configs, that the files they name
    exist and that their factories, loaders and metrics import (modules beside the recipe included).
    Exit status 2 at the first problem, located by file and key."""
    from workbench.recipe.checks import check_recipe
    from workbench.recipe.loader import load_recipe

    for path in recipes:
        recipe = load_recipe(path)
        from workbench.sweep.space import expand  # the step registry imports torch: only once a recipe has loaded

        variants = expand(recipe)
        check_recipe(recipe, file=str(path))
        console.print(f"[green]ok[/] {path}: {len(variants)} variants")


@app.command("init")
def init_command(
    model: Annotated[str, typer.Argument(help="An .onnx file, or a torch factory 'pkg.module:function'.")],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="An .npz of arrays named like the inputs, plus 'labels' if any."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the recipe.")] = Path("recipe.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
) -> None:
    """Write a starter recipe for MODEL that runs as written: pipelines that fit its format, and a metric
    that fits its outputs (accuracy on its labels or scores with --data that has labels, else cosine)."""
    from workbench.recipe.init import write_starter_recipe

    starter = write_starter_recipe(model, data=data, out=out, force=force)
    for extra in starter.extra_files:
        console.print(f"wrote {extra} (random inputs: no --data given)", highlight=False)
    console.print(f"[green]wrote[/] {out}; next: workbench validate {out} && workbench run {out}", highlight=False)


@app.command()
def doctor(
    cluster: Annotated[
        str | None,
        typer.Option("--cluster", help="Also list a Ray cluster's nodes and pools: local:N, ray://host:port, auto."),
    ] = None,
) -> None:
    """What is installed, CPU flags, GPU or not, and which extras work (and a cluster's nodes)."""
    from workbench.doctor import cluster_checks, doctor_table, required_ok, run_checks

    checks = run_checks() + (cluster_checks(cluster) if cluster else [])
    console.print(doctor_table(checks))
    if not required_ok(checks):
        raise typer.Exit(1)


def _check_endpoint_url(url: str) -> None:
    """An endpoint is an http(s) URL with a host (and a valid port); anything else is bad input (exit 2)."""
    from urllib.parse import urlsplit

    expected = "expected an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000"
    try:
        parts = urlsplit(url)
        valid = parts.scheme in {"http", "https"} and bool(parts.hostname)
        _ = parts.port  # ValueError for a port that is not a number in 0-65535
    except ValueError:
        valid = False
    if not valid:
        raise UsageError(f"{expected}; got {url!r}")


@app.command()
def load(
    url: Annotated[str, typer.Argument(help="An OIP v2 endpoint, e.g. http://127.0.0.1:8000 (Triton, KServe, ours).")],
    model: Annotated[str, typer.Option("--model", help="The model's name at the endpoint.")],
    profile: Annotated[
        str, typer.Option("--profile", help="A load profile: YAML file, or a name in recipes/profiles/ (sla).")
    ] = "concurrency",
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Rows per request.")] = None,
    binary: Annotated[
        bool | None, typer.Option("--binary/--json", help="Binary tensor extension or JSON tensors.")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=0, help="Locust workers (0: one process).")] = 0,
    data: Annotated[
        Path | None, typer.Option("--data", help="An .npz of real inputs (default: random, from model metadata).")
    ] = None,
    reports: ReportsOpt = Path("reports"),
) -> None:
    """Measure any OIP v2 endpoint under a load profile; write the same versioned report as `run`."""
    from workbench.sweep.endpoint import load_endpoint

    _check_endpoint_url(url)
    err.print(f"load [bold]{model}[/] at {url} ({profile})")
    done = load_endpoint(
        url, model=model, profile=profile, reports=reports, workers=workers, data=data, batch_size=batch_size,
        binary=binary,
    )  # fmt: skip
    for advice in done.result.advice:
        err.print(f"[bold yellow]warning:[/] {advice}")
    _show_run(done.run.path)
    if done.result.sla is not None:
        sla = done.result.sla
        console.print(f"[bold]SLA:[/] {sla.rate_rps} rps meets {sla.percentile} <= {sla.latency_ms_max} ms")


PriceOpt = Annotated[
    float | None,
    typer.Option("--price-per-hour", min=0.0, help="Instance price per hour: adds cost per 1M inferences."),
]


@report_app.command("open")
def report_open(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, recipe/run-id, a path, or 'latest'.")],
    price_per_hour: PriceOpt = None,
    browser: Annotated[
        bool | None, typer.Option("--browser/--no-browser", help="Open it (default: when run from a terminal).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the page here (outside the run), e.g. at another price.")
    ] = None,
    reports: ReportsOpt = Path("reports"),
) -> None:
    """Write RUN's self-contained report.html (plots embedded) if missing, print where it is, open it.

    A finished run is never rewritten: a page at another price (--price-per-hour) goes to --out FILE.
    """
    import webbrowser

    from workbench.report.html import write_report_html
    from workbench.report.rundir import ReportStore

    path = write_report_html(ReportStore(reports).find(run_ref), price_per_hour=price_per_hour, out=out)
    console.print(f"html: {path}")
    if browser if browser is not None else sys.stdout.isatty():
        webbrowser.open(path.resolve().as_uri())


@app.command("select")
def select_command(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, recipe/run-id, a path, or 'latest'.")],
    constraint: Annotated[
        list[str] | None,
        typer.Option("--constraint", "-c", help="METRIC<=N or METRIC>=N, e.g. latency_ms.p99<=20. Repeatable."),
    ] = None,
    objective: Annotated[
        list[str] | None,
        typer.Option(
            "--objective",
            "-o",
            help="A metric (direction known); repeat for tie-breakers, or weight: 0.7*throughput_rps.",
        ),
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Rank in-process rows here.")] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="served or inprocess (default: served if any).")] = None,
    price_per_hour: PriceOpt = None,
    reports: ReportsOpt = Path("reports"),
) -> None:
    """Pick RUN's best variant under constraints (default: the recipe's own constraints and objective)."""
    from workbench._api import select as pick
    from workbench.errors import UsageError

    if mode not in (None, "served", "inprocess"):
        raise UsageError(f"--mode {mode!r}: use served or inprocess")
    chosen = pick(
        run_ref, constraints=constraint, objective=objective, batch_size=batch_size, mode=mode,  # type: ignore[arg-type]
        price_per_hour=price_per_hour, reports=reports,
    )  # fmt: skip
    _print_ranking(chosen.ranking, chosen.metric)
    console.print(f"[bold green]best:[/] {chosen.variant} — {chosen.reason}")


def _print_ranking(ranking: Any, metric: str) -> None:
    columns = ["rank", "variant", "case", "batch_size", metric, "latency_ms_p99", "cost_per_million", "violations"]
    shown = [c for c in dict.fromkeys(columns) if c in ranking]
    table = Table(*shown, header_style="bold")
    for _, row in ranking.iterrows():
        table.add_row(*(_cell(row[c]) for c in shown))
    console.print(table)


def _cell(value: Any) -> str:
    import pandas as pd

    if pd.api.types.is_scalar(value) and pd.isna(value):  # None, NaN, or <NA> (an infeasible variant's rank)
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command("compare")
def compare_command(
    runs: Annotated[list[str], typer.Argument(metavar="RUN...", help="Two or more runs; the first is the baseline.")],
    metric: Annotated[
        list[str] | None, typer.Option("--metric", "-m", help="Metrics to compare (default: throughput, p50, p99).")
    ] = None,
    reports: ReportsOpt = Path("reports"),
) -> None:
    """Runs side by side: the gate's comparison without thresholds (ratio of medians, its 95% interval,
    the rank test), with a verdict word: faster, slower or no clear change."""
    from workbench.decide.compare import DEFAULT_METRICS, compare

    result = compare(runs, reports=reports, metrics=metric or DEFAULT_METRICS)
    table = Table("variant", "mode", "case", "metric", "run", "baseline", "value", "ratio", "95% interval", "p",
                  "verdict", title=f"baseline: {result.runs[0]}", header_style="bold")  # fmt: skip
    for _, r in result.table.iterrows():
        interval = "exact" if r["ci_low"] == r["ci_high"] else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        p_value = "–" if r["p_value"] is None or r["p_value"] != r["p_value"] else f"{r['p_value']:.3g}"
        cells = (r["variant"], r["mode"], r["case"], r["metric"], r["run"], f"{r['baseline']:.4g}", f"{r['value']:.4g}")
        table.add_row(*cells, f"{r['ratio']:.3f}", interval, p_value, r["verdict"])
    console.print(table)
    for method in dict.fromkeys(result.table["method"]):
        console.print(f"[dim]method: {method}[/]", highlight=False)
    for line in result.unmatched:
        console.print(f"[dim]unmatched: {line}[/]")
    for warning in result.warnings:
        err.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


baseline_app = typer.Typer(help="The committed baseline the CI gate compares with.", no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")


@app.command("gate")
def gate_command(
    fail: Annotated[
        list[str],
        typer.Option("--fail", help="METRIC:[+|-]AMOUNT[%], e.g. latency_ms.p99:+10%, throughput_rps:-5%, mean:5%."),
    ],
    baseline: Annotated[str | None, typer.Option("--baseline", help="A run (folder, recipe/run-id) or .json.")] = None,
    candidate: Annotated[str | None, typer.Option("--candidate", help="A run: folder, recipe/run-id, latest.")] = None,
    pytest_benchmark: Annotated[
        Path | None, typer.Option("--pytest-benchmark", help="Candidate pytest-benchmark JSON (--benchmark-json).")
    ] = None,
    interleave: Annotated[
        bool, typer.Option("--interleave", help="Measure baseline and candidate alternately here (recommended).")
    ] = False,
    baseline_bundle: Annotated[Path | None, typer.Option("--baseline-bundle", help="With --interleave.")] = None,
    candidate_bundle: Annotated[Path | None, typer.Option("--candidate-bundle", help="With --interleave.")] = None,
    baseline_model: Annotated[Path | None, typer.Option("--baseline-model", help="An ONNX file, --interleave.")] = None,
    candidate_model: Annotated[Path | None, typer.Option("--candidate-model", help="ONNX file, --interleave.")] = None,
    rounds: Annotated[int, typer.Option("--rounds", min=2, help="Interleaved rounds (each measures both).")] = 6,
    profile: Annotated[str | None, typer.Option("--profile", help="Load profile for --interleave.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="An .npz of inputs for --interleave.")] = None,
    threads: Annotated[int, typer.Option("--threads", min=0, help="Intra-op threads for --*-model.")] = 1,
    inconclusive: Annotated[
        str, typer.Option("--inconclusive", help="pass or fail: how an inconclusive check counts.")
    ] = "pass",
    method: Annotated[str, typer.Option("--method", help="both, bootstrap or mann-whitney.")] = "both",
    statistic: Annotated[str, typer.Option("--statistic", help="median or mean across trials.")] = "median",
    min_trials: Annotated[int, typer.Option("--min-trials", min=2, help="Fewer trials: inconclusive.")] = 5,
    error_control: Annotated[
        str, typer.Option("--error-control", help="Across the checks: holm (family-wise α), bh (FDR) or none.")
    ] = "holm",
    case: Annotated[list[str] | None, typer.Option("--case", help="Only cases matching (fnmatch).")] = None,
    summary: Annotated[Path | None, typer.Option("--summary", help="Write a Markdown summary (PR comment).")] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML.")] = None,
    history: Annotated[
        Path | None,
        typer.Option("--history", help="A reports folder: also fail on a worse change point before the candidate."),
    ] = None,
    reports: ReportsOpt = Path("reports"),
) -> None:
    """Fail (exit 1) when the candidate is slower or less accurate than the baseline beyond a
    threshold and beyond noise; exit 0 within budget, 2 on bad input."""
    from workbench.gate.command import GateRequest, run_gate
    from workbench.gate.output import text_lines
    from workbench.gate.rules import gate_options

    request = GateRequest(
        rules=tuple(fail), options=gate_options(inconclusive, method, statistic, min_trials, case or [], error_control),
        baseline=baseline, candidate=candidate, pytest_benchmark=pytest_benchmark, interleave=interleave,
        baseline_bundle=baseline_bundle, candidate_bundle=candidate_bundle, baseline_model=baseline_model,
        candidate_model=candidate_model, rounds=rounds, profile=profile, data=data, threads=threads,
        reports=reports, summary=summary, junit=junit, history=history,
    )  # fmt: skip
    result = run_gate(request)
    for line in text_lines(result):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(result.exit_code)


@baseline_app.command("promote")
def baseline_promote(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, recipe/run-id, a path, or 'latest'.")],
    reports: ReportsOpt = Path("reports"),
) -> None:
    """Copy a complete RUN (with its environment) to reports/<recipe>/baseline for the CI gate."""
    from workbench.gate.baseline import promote

    done = promote(run_ref, reports=reports)
    was = f" (replacing {done.replaced})" if done.replaced else ""
    console.print(f"baseline: {done.path} ← {done.source.path}{was}; commit it", highlight=False, soft_wrap=True)


@app.command("export")
def export_command(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, recipe/run-id, a path, or 'latest'.")],
    variant: Annotated[
        str | None, typer.Option("--variant", help="best (the run's selection), baseline, or a variant id.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="The bundle directory (default bundles/<name>-<version>).")
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Semantic version (default: the one --out ends with).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="The model's name (default: the recipe's).")] = None,
    fallback: Annotated[
        str, typer.Option("--fallback", help="auto (the ONNX baseline or fp32 export), none, or a variant id.")
    ] = "auto",
    p99_budget_ms: Annotated[
        float | None, typer.Option("--p99-budget-ms", help="The alerts' p99 budget (default: from the run).")
    ] = None,
    sign: Annotated[
        Path | None, typer.Option("--sign", help="A PEM Ed25519 private key (workbench keygen) that signs the bundle.")
    ] = None,
    reports: ReportsOpt = Path("reports"),
) -> None:
    """Export RUN's variant as a bundle (directory + .tar.gz) that `python -m serving_harness serve` runs alone."""
    from workbench._api import export

    bundle = export(
        run_ref, out=out, variant=variant, name=name, version=version, fallback=fallback, reports=reports,
        p99_budget_ms=p99_budget_ms, sign=sign,
    )  # fmt: skip
    slo = bundle.manifest.slo
    console.print(f"[bold green]bundle:[/] {bundle.path} ({bundle.manifest.name} {bundle.manifest.version})")
    console.print(f"archive: {bundle.archive}\nmanifest sha256: {bundle.digest}", highlight=False)
    trust = " --trust KEY.pub" if bundle.signed_by else ""
    console.print("signed by key " + bundle.signed_by if bundle.signed_by else "unsigned (sign with --sign KEY)")
    console.print(f"p99 budget {slo.latency_budget_ms_p99:g} ms ({slo.source} figures); next: "
                  f"python -m serving_harness verify {bundle.path}{trust}", highlight=False)  # fmt: skip


@app.command("keygen")
def keygen_command(
    out: Annotated[Path, typer.Argument(help="The private key file to write; the public key goes to OUT.pub.")],
) -> None:
    """Make an Ed25519 key pair to sign bundles (export --sign OUT) and check them (serve|verify --trust OUT.pub)."""
    from workbench.bundle.sign import generate_key_pair

    pair = generate_key_pair(out)
    console.print(f"private key: {pair.private} (keep it secret)\npublic key: {pair.public} (key id {pair.key_id})",
                  highlight=False)  # fmt: skip


@app.command("canary")
def canary_command(
    url: Annotated[str, typer.Argument(help="A canary served by `python -m serving_harness serve --canary A B`.")],
    duration: Annotated[str, typer.Option("--duration", help="How long to watch: 30s, 5m, 1h.")] = "5m",
    interval: Annotated[str, typer.Option("--interval", help="One round per scrape of /metrics.")] = "10s",
    apply: Annotated[bool, typer.Option("--apply", help="Act on the decision (promote or roll back).")] = False,
    rollback: Annotated[bool, typer.Option("--rollback", help="Send the candidate no traffic now; no watch.")] = False,
    promote: Annotated[bool, typer.Option("--promote", help="Send the candidate all traffic now; no watch.")] = False,
    min_requests: Annotated[int, typer.Option("--min-requests", help="Candidate requests needed to promote.")] = 200,
    latency_tolerance: Annotated[
        float, typer.Option("--latency-tolerance", help="How much slower the candidate may be (0.10 = 10%).")
    ] = 0.10,
    token: Annotated[
        str | None, typer.Option("--token", envvar="SH_AUTH_TOKEN", help="The server's bearer token.")
    ] = None,
) -> None:
    """Watch a canary's live /metrics and print promote, hold or roll back with the evidence.

    Exit status: 0 promote, 3 hold, 4 roll back. Roll back in one command: `workbench canary URL --rollback`.
    """
    from workbench.gate import canary

    if rollback or promote:
        state = canary.set_weight(url, 0.0 if rollback else 1.0, token)
        console.print(f"{state['model']}: candidate {state['candidate']} now gets {state['weight']:.0%} of traffic")
        return
    split = canary.read_split(url, token)
    seconds = canary.parse_duration_s(duration)
    err.print(f"watching {split['model']}: stable {split['stable']}, candidate {split['candidate']} "
              f"at {split['weight']:.0%}, for {duration}")  # fmt: skip
    snapshots = canary.watch(
        url, split["model"], duration_s=seconds, interval_s=canary.parse_duration_s(interval), token=token
    )
    policy = canary.CanaryPolicy(min_requests=min_requests, latency_tolerance=latency_tolerance)
    verdict = canary.judge(
        snapshots, stable=split["stable"], candidate=split["candidate"], slo=split.get("slo"), policy=policy
    )
    table = Table(*canary.FIGURE_COLUMNS, header_style="bold")
    for row in canary.figure_rows(verdict):
        table.add_row(*row)
    console.print(table)
    for line in [*canary.evidence_lines(verdict), *verdict.reasons]:
        console.print(f"  {line}", highlight=False)
    console.print(f"[bold]decision: {verdict.decision.upper()}[/]")
    if apply and verdict.decision in canary.APPLY_WEIGHT:
        canary.set_weight(url, canary.APPLY_WEIGHT[verdict.decision], token)
        console.print(f"applied: candidate weight {canary.APPLY_WEIGHT[verdict.decision]:.0%}")
    elif command := canary.apply_command(url, verdict.decision):
        console.print(f"to apply: {command}", highlight=False)
    raise typer.Exit(canary.EXIT_CODES[verdict.decision])


def _click_classes(name: str) -> tuple[type[BaseException], ...]:
    """Click's exception class ``name`` from every copy in use: typer >= 0.29 ships its own click
    (``typer._click``) and its own Exit/Abort, older typer raises the click package's."""
    found: list[type[BaseException]] = []
    for module_name in ("click.exceptions", "typer._click.exceptions", "typer.exceptions"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cls = getattr(module, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in found:
            found.append(cls)
    return tuple(found)


CLICK_ERRORS = _click_classes("ClickException")
CLICK_EXITS = _click_classes("Exit")
INTERRUPTS: tuple[type[BaseException], ...] = (KeyboardInterrupt, *_click_classes("Abort"))


def main() -> None:
    """Entry point: run the app, turn known errors into one line and an exit code."""
    try:
        code = app(standalone_mode=False)  # without standalone mode click returns typer.Exit's code
        if isinstance(code, int) and code:
            sys.exit(code)
    except WorkbenchError as exc:
        if _state["debug"]:
            raise
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)  # '[x]' is text
        sys.exit(exc.exit_code)
    except CLICK_EXITS as exc:
        sys.exit(getattr(exc, "exit_code", 0))
    except CLICK_ERRORS as exc:
        exc.show()  # type: ignore[attr-defined]
        sys.exit(2)
    except INTERRUPTS:  # `run` says how to resume its own run; any other command just stops
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
