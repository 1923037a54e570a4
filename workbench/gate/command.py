"""``workbench gate``: read (or measure) both sides, check the rules, write the summary and JUnit files.

Three ways to get the two sides, one per request:

- two runs: ``--baseline reports/digits-cpu/baseline --candidate latest``;
- pytest-benchmark JSON: ``--pytest-benchmark out.json --baseline baseline.json``;
- interleaved A/B (recommended): ``--interleave --baseline-bundle A --candidate-bundle B`` (or
  ``--baseline-model FILE --candidate-model FILE``), measured here and now, round by round.

With two runs, ``--history DIR`` also places the candidate on its recipe's timeline under ``DIR`` and
fails on a worse change point it sits behind (``workbench.gate.history``): a creep of small steps.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from serving_harness.config import RuntimeSettings, ServingConfig
from workbench.errors import UsageError
from workbench.gate.output import junit_xml, markdown
from workbench.gate.rules import GateOptions, GateResult, Rule, gate, parse_rule
from workbench.gate.sources import Source, find_run, load_source, pytest_benchmark_source

__all__ = ["GateRequest", "run_gate"]


@dataclass(frozen=True)
class GateRequest:
    """Everything ``workbench gate`` was asked, as data."""

    rules: tuple[str, ...]
    options: GateOptions = field(default_factory=GateOptions)
    baseline: str | None = None
    candidate: str | None = None
    pytest_benchmark: Path | None = None
    interleave: bool = False
    baseline_bundle: Path | None = None
    candidate_bundle: Path | None = None
    baseline_model: Path | None = None
    candidate_model: Path | None = None
    rounds: int = 6
    profile: str | None = None
    data: Path | None = None
    threads: int = 1
    workdir: Path | None = None
    reports: Path = Path("reports")
    summary: Path | None = None
    junit: Path | None = None
    history: Path | None = None  # a reports folder with the candidate's earlier runs


def run_gate(request: GateRequest) -> GateResult:
    """Check the request's rules; write ``summary`` (Markdown) and ``junit`` (XML) when asked."""
    rules = [parse_rule(text) for text in request.rules]  # bad rules fail before anything is measured
    baseline, candidate, warnings = _sides(request)
    result = gate(baseline, candidate, rules, request.options)
    result = replace(result, warnings=[*warnings, *result.warnings])
    if request.history is not None:
        result = _with_history(result, request, rules)
    if request.summary is not None:
        _write(request.summary, markdown(result))
    if request.junit is not None:
        _write(request.junit, junit_xml(result))
    return result


def _with_history(result: GateResult, request: GateRequest, rules: list[Rule]) -> GateResult:
    """The result with the history's regressions against the candidate run added as checks."""
    from workbench.gate.history import history_checks  # pandas and ruptures: only when asked

    if request.candidate is None or request.interleave or request.pytest_benchmark is not None:
        raise UsageError("--history places a candidate run on its timeline: use it with --baseline and --candidate")
    if request.history is None or not request.history.is_dir():
        raise UsageError(f"--history {request.history}: not a folder of runs (e.g. reports)")
    candidate = find_run(request.candidate, reports=request.reports)
    found = history_checks(candidate, request.history, rules, cases=request.options.cases)
    return replace(result, checks=[*result.checks, *found.checks], history=found.summary)


def _sides(request: GateRequest) -> tuple[Source, Source, list[str]]:
    if request.interleave:
        return _interleaved(request)
    if request.pytest_benchmark is not None:
        if request.baseline is None or request.candidate is not None:
            raise UsageError("--pytest-benchmark FILE compares with --baseline BASELINE.json (and no --candidate)")
        return pytest_benchmark_source(Path(request.baseline)), pytest_benchmark_source(request.pytest_benchmark), []
    _refuse_interleave_inputs(request)
    if request.baseline is None or request.candidate is None:
        raise UsageError(
            "give --baseline and --candidate (runs), --pytest-benchmark FILE --baseline FILE, or --interleave"
        )
    return (
        load_source(request.baseline, reports=request.reports),
        load_source(request.candidate, reports=request.reports),
        [],
    )


def _refuse_interleave_inputs(request: GateRequest) -> None:
    given = [request.baseline_bundle, request.candidate_bundle, request.baseline_model, request.candidate_model]
    if any(path is not None for path in given):
        raise UsageError("--baseline-bundle/--candidate-bundle/--*-model measure an A/B: add --interleave")


def _interleaved(request: GateRequest) -> tuple[Source, Source, list[str]]:
    from workbench.gate.interleave import bundle_contender, measure_interleaved, model_contender

    if request.baseline is not None or request.candidate is not None or request.pytest_benchmark is not None:
        raise UsageError("--interleave measures its own sides: drop --baseline/--candidate/--pytest-benchmark")
    bb, cb, bm, cm = request.baseline_bundle, request.candidate_bundle, request.baseline_model, request.candidate_model
    if bb is not None and cb is not None and bm is None and cm is None:
        sides = (bundle_contender("baseline", bb), bundle_contender("candidate", cb))
    elif bm is not None and cm is not None and bb is None and cb is None:
        settings = ServingConfig(runtime=RuntimeSettings(intra_op_threads=request.threads))
        sides = (model_contender("baseline", bm, settings), model_contender("candidate", cm, settings))
    else:
        raise UsageError(
            "--interleave needs --baseline-bundle and --candidate-bundle, or --baseline-model and --candidate-model"
        )
    with tempfile.TemporaryDirectory(prefix="workbench-gate-") as scratch:
        workdir = request.workdir or Path(scratch)
        run = measure_interleaved(
            *sides, rounds=request.rounds, workdir=workdir, profile=request.profile, data=request.data
        )
    return run.baseline, run.candidate, [f"untrusted round: {line}" for line in run.warnings]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
