"""The ``workbench`` command. The one place that turns a WorkbenchError into a message and an exit
code (1, or 2 for bad input); ``--debug`` shows the traceback instead."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from workbench.errors import WorkbenchError

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
    reports: ReportsOpt = Path("reports"),
) -> None:
    """Build, check and measure every variant of RECIPE; write a report and print the table.

    With `load.enabled` (or --load), each variant that passes the accuracy gate is also served by
    serving_harness in a subprocess and driven by Locust with the recipe's load profile.

    Interrupt it at any time (Ctrl-C): `--resume` picks up where it stopped without redoing the
    variants that finished.
    """
    from workbench.loader import load_recipe
    from workbench.run import run_recipe

    overrides = list(set_ or [])
    if served is not None:
        overrides.append(f"load.enabled={str(served).lower()}")
    if load_workers is not None:
        overrides.append(f"load.workers={load_workers}")
    spec = load_recipe(recipe, overrides)
    with _progress() as progress:
        hook = _progress_hook(progress)
        run_dir = run_recipe(spec, reports=reports, resume=run_ref or resume, hook=hook)
    _show_run(run_dir.path)


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


def _progress_hook(progress: Progress) -> Any:
    task_ids: dict[str, Any] = {}

    def hook(event: str, payload: dict[str, Any]) -> None:
        if event == "plan":
            err.print(
                f"run [bold]{payload['run'].path}[/] ({payload['done']} of {payload['total']} variants already done)"
            )
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
    import pandas as pd

    from workbench.report.render import SUMMARY_COLUMNS, summary_rows
    from workbench.report.store import RESULTS_FILE, RunDir

    run_dir = RunDir(path)
    envelope = run_dir.read_envelope()
    table = Table(title=f"{envelope.recipe_name} · {envelope.run_id} · {envelope.status}", header_style="bold")
    for column in SUMMARY_COLUMNS:
        table.add_column(
            column,
            justify="right" if column not in {"variant", "status", "runtime", "quality", "mode", "flags"} else "left",
        )
    results = path / RESULTS_FILE
    if results.exists():
        for row in summary_rows(pd.read_parquet(results)):
            table.add_row(*(row[c] for c in SUMMARY_COLUMNS))
    console.print(table)
    summary = envelope.summary
    if summary.get("best"):
        console.print(f"[bold green]best:[/] {summary['best']} — {summary['reason']}")
    elif summary:
        console.print(f"[bold yellow]no selection:[/] {summary.get('reason')}")
    console.print(f"report: {path / 'report.md'}")


@report_app.command("list")
def report_list(
    recipe: Annotated[str | None, typer.Option("--recipe", help="Only this recipe's runs.")] = None,
    reports: ReportsOpt = Path("reports"),
) -> None:
    """List runs, oldest first."""
    from workbench.report.store import ReportStore

    table = Table("run", "created", "status", "variants", "best", header_style="bold")
    for run_dir in ReportStore(reports).runs(recipe):
        envelope = run_dir.read_envelope()
        table.add_row(
            f"{run_dir.recipe_name}/{run_dir.run_id}",
            f"{envelope.created:%Y-%m-%d %H:%M}",
            envelope.status,
            str(len(run_dir.finished_variants())),
            str(envelope.summary.get("best") or "–"),
        )
    console.print(table)


@report_app.command("show")
def report_show(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id, recipe/run-id, a path, or 'latest'.")],
    reports: ReportsOpt = Path("reports"),
) -> None:
    """Print a run's results table."""
    from workbench.report.store import ReportStore

    _show_run(ReportStore(reports).find(run_ref).path)


@report_app.command("schema")
def report_schema() -> None:
    """Print the recipe JSON Schema (for editors and validation)."""
    from workbench.loader import recipe_json_schema

    sys.stdout.write(json.dumps(recipe_json_schema(), indent=2) + "\n")


@app.command()
def validate(recipes: Annotated[list[Path], typer.Argument(help="Recipe files to check.")]) -> None:
    """Check recipes without running them (schema, extends, step names and configs)."""
    from workbench.loader import load_recipe
    from workbench.sweep import expand

    for path in recipes:
        variants = expand(load_recipe(path))
        console.print(f"[green]ok[/] {path}: {len(variants)} variants")


@app.command()
def doctor() -> None:
    """What is installed, CPU flags, GPU or not, and which extras work."""
    from workbench.doctor import doctor_table, required_ok, run_checks

    checks = run_checks()
    console.print(doctor_table(checks))
    if not required_ok(checks):
        raise typer.Exit(1)


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
    from workbench.measure.endpoint import load_endpoint

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


def main() -> None:
    """Entry point: run the app, turn known errors into one line and an exit code."""
    try:
        app(standalone_mode=False)
    except WorkbenchError as exc:
        if _state["debug"]:
            raise
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except (KeyboardInterrupt, click.exceptions.Abort):
        err.print("interrupted: `workbench run RECIPE --resume` finishes the run")
        sys.exit(130)


if __name__ == "__main__":
    main()
