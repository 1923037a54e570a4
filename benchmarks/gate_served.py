"""The CI gate on served models: A/A decisions on a real bundle, interleaved bundles vs sequential runs.

    .venv/bin/python benchmarks/gate_served.py                   # 40 decisions per arm (~40 min on 2 cores)
    .venv/bin/python benchmarks/gate_served.py --decisions 2     # a quick check that it runs

One small real bundle (the digits example's fp32 ONNX export, made here by a short in-process run and
``export_bundle``) is gated against itself, so every regression is a false alarm. Each decision serves
the bundle twice, as it ships (``python -m serving_harness serve BUNDLE``, two processes), and drives
each with Locust (2 closed-loop users, OIP JSON at batch 1):

- interleaved (``workbench gate --interleave --baseline-bundle B --candidate-bundle B``): both servers
  up at once, ``--rounds`` rounds in ABBA order, each round one short step on each side; the gate pairs
  the rounds. This is ``workbench.gate.interleave.measure_interleaved`` itself.
- sequential (two ``workbench run``s gated with ``--baseline``/``--candidate``): the baseline served
  alone for one step of ``--rounds`` windows, stopped, then the candidate the same way; the gate compares
  the windows, unpaired, as it does for two runs' served steps.

Each side gets the same measuring time in both arms: ``rounds`` figures of ``window_s × windows`` seconds.
The arms alternate decision by decision, so both see the same machine (this one is shared and busy).
A decision is the gate's verdict over all its checks (after its error control across checks, Holm by
default): a false alarm when it is a regression. Each rate is printed with its Wilson 95% interval.
Target: at most 5% false alarms, the upper bound at most 8%.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _gate_support import Design, Tally, report
from _locust import fixed_windows_profile

from workbench.bundle.export import export_bundle
from workbench.gate.interleave import (
    Contender,
    bundle_contender,
    contender_payloads,
    measure_interleaved,
    serve_contender,
)
from workbench.gate.rules import GateOptions, GateResult, gate, parse_rule
from workbench.gate.sources import Source, measurement_figures
from workbench.measure.load.engine import Target, run_profile
from workbench.recipe.profiles import load_profile
from workbench.recipe.spec import Recipe
from workbench.stats import ErrorControl
from workbench.sweep.runner import run_recipe

RULES = ("latency_ms.p50:+10%", "latency_ms.p99:+10%", "throughput_rps:-5%")
USERS = 2

# The digits example, small: one fp32 ONNX export to ship (the torch baseline is only the quality reference).
RECIPE: dict[str, Any] = {
    "name": "digits-gate-served",
    "model": {"source": "example", "name": "digits"},
    "data": {"source": "example", "metric": "accuracy"},
    "search": {
        "baseline": "torch-eager",
        "pipelines": {"torch-eager": [], "ort-fp32": ["export.onnx"]},
        "serving": {"base": {"runtime": {"intra_op_threads": 1, "inter_op_threads": 1}}},
    },
    "measure": {"batch_sizes": [1], "warmup_iters": 5, "trials": 2, "trial_duration_s": 0.1},
    "load": {"enabled": False},
}


def make_bundle(folder: Path) -> Path:
    """The digits fp32 export as a bundle (a short in-process run, then ``export_bundle``)."""
    reports = folder / "reports"
    run = run_recipe(Recipe.model_validate(RECIPE), reports=reports)
    return export_bundle(run.path, out=folder / "bundle", variant="ort-fp32", reports=reports).path


def round_profile(window_s: float, windows: int) -> dict[str, Any]:
    """One interleaved round's step: a fixed number of windows (no settling), so each round is as long."""
    return fixed_windows_profile(USERS, warmup_s=0.5, windows=windows, window_s=window_s)


def sequential_profile(window_s: float, windows: int, rounds: int) -> dict[str, Any]:
    """The sequential side's one step: ``rounds`` windows, each as long as an interleaved round's step."""
    return round_profile(window_s * windows, rounds)


def interleaved_decision(bundle: Path, args: argparse.Namespace, workdir: Path) -> GateResult:
    run = measure_interleaved(
        bundle_contender("baseline", bundle), bundle_contender("candidate", bundle), rounds=args.rounds,
        workdir=workdir, profile=round_profile(args.window_s, args.windows),
    )  # fmt: skip
    return _gate(run.baseline, run.candidate, args.error_control)


def sequential_decision(bundle: Path, args: argparse.Namespace, workdir: Path) -> GateResult:
    profile = sequential_profile(args.window_s, args.windows, args.rounds)
    sides = [_served_alone(bundle_contender(label, bundle), profile, workdir / label) for label in ("a", "b")]
    return _gate(sides[0], sides[1], args.error_control)


def _served_alone(contender: Contender, profile: dict[str, Any], workdir: Path) -> Source:
    """Serve ``contender`` alone, run one step, stop it: its windows as the gate reads a run's served step."""
    spec = load_profile(profile)
    with serve_contender(contender, workdir) as server:
        payloads = contender_payloads(server, contender.model_name, spec, None, workdir)
        target = Target(url=server.url, model=contender.model_name, server=server)
        (step,) = run_profile(target, spec, payloads, workdir=workdir / "load").steps
    # as the gate reads a run's served step: a latency no window could carry (too few requests for a p99)
    # is empty, so a rule on it is inconclusive for this side
    figures = measurement_figures(step.measurement, step.measurement.samples)
    return Source(str(contender.model_path), {step.measurement.case: figures})


def _gate(baseline: Source, candidate: Source, error_control: ErrorControl) -> GateResult:
    return gate(baseline, candidate, [parse_rule(r) for r in RULES], GateOptions(error_control=error_control))


def verdict_of(result: GateResult) -> str:
    if result.count("regression"):
        return "regression"
    return "inconclusive" if result.count("inconclusive") else "pass"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=40, help="decisions per arm")
    parser.add_argument(
        "--rounds", type=int, default=6, help="figures per side: rounds interleaved, windows sequential"
    )
    parser.add_argument("--windows", type=int, default=2, help="windows in one interleaved round's step")
    parser.add_argument("--window-s", type=float, default=0.5)
    parser.add_argument("--error-control", choices=["holm", "bh", "none"], default="holm")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    arms: dict[str, Callable[[Path, argparse.Namespace, Path], GateResult]] = {
        "interleaved": interleaved_decision,
        "sequential": sequential_decision,
    }
    verdicts: dict[str, Counter[str]] = {arm: Counter() for arm in arms}
    seconds: dict[str, float] = dict.fromkeys(arms, 0.0)
    control = ""
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        bundle = make_bundle(folder)
        per_side_s = args.rounds * args.windows * args.window_s
        print(f"A/A served: {bundle.name} against itself; {args.decisions} decisions per arm, "
              f"{per_side_s:g} s measured per side", flush=True)  # fmt: skip
        for index in range(args.decisions):
            for arm, decide in arms.items():  # alternate: both arms see the same machine
                started = time.perf_counter()
                result = decide(bundle, args, folder / f"{arm}-{index:03d}")
                seconds[arm] += time.perf_counter() - started
                control = result.error_control()
                verdict = verdict_of(result)
                verdicts[arm][verdict] += 1
                if verdict == "regression":
                    print(f"  {arm:11s} decision {index + 1}: regression; {_details(result)}", flush=True)
            print(f"  {index + 1}/{args.decisions}: " + "; ".join(
                f"{arm} {dict(verdicts[arm])}" for arm in arms), flush=True)  # fmt: skip
    for arm in arms:
        design = Design(arm, args.rounds, args.windows * args.window_s, RULES, args.error_control)
        tally = Tally(design, verdicts[arm], seconds[arm], control)
        report("A/A served false alarms", tally, rate_of="regression", target="≤ 5%, upper bound ≤ 8%")


def _details(result: GateResult) -> str:
    return "; ".join(
        f"{c.case} {c.rule.text} {c.verdict} {c.comparison.describe_change() if c.comparison else ''}"
        for c in result.checks
        if c.verdict == "regression"
    )


if __name__ == "__main__":
    main()
