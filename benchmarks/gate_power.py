"""Power of the CI gate: how often it catches a candidate that does 15% (and 5%) more work per call.

    .venv/bin/python benchmarks/gate_power.py                       # 200 decisions per arm (~30 min on 2 cores)
    .venv/bin/python benchmarks/gate_power.py --decisions 10        # a quick check that it runs
    .venv/bin/python benchmarks/gate_power.py --extra 0.05 --rule latency_ms.p50:+3% --rule throughput_rps:-3%

The candidate is the same small real ONNX model wrapped in a runtime that makes every call do ``--extra``
more work: it keeps the CPU busy for that share of the call's own duration (``_gate_support.SlowedRuntime``).
Each decision measures both with the workbench's in-process measurement and asks the gate about p50, p99
and throughput (``_gate_support.RULES``: +10%, +10%, -5%); caught = the decision, over all its checks
(after the gate's error control across checks), is a regression. Both arms get the same trials per side:
interleaved rounds (paired) and sequential blocks. Each rate is printed with its Wilson 95% interval.
Targets: a 15% slowdown caught in ≥ 95% of decisions, a 5% slowdown in ≥ 50%.

A 5% slowdown is within the default rules' budget (throughput −4.8% against −5% allowed, p50 +5%
against +10%): passing it is the gate doing as told. Its power is measured with rules below 5%, as in
the third command.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _gate_support import RULES, Design, SlowedRuntime, dataset, estimate_line, load, mlp_model, report, run_decisions

from serving_harness.runtimes.base import Runtime

TARGETS = {0.15: "≥ 95%", 0.05: "≥ 50%"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=200, help="decisions per arm")
    parser.add_argument("--rounds", type=int, default=8, help="trials per side (one per round when interleaved)")
    parser.add_argument("--trial-s", type=float, default=0.1)
    parser.add_argument("--extra", type=float, nargs="+", default=[0.15, 0.05], help="extra work per call, shares")
    parser.add_argument("--mode", choices=["interleaved", "sequential", "both"], default="both")
    parser.add_argument(
        "--rule", action="append", help=f"a gate rule (repeatable; default {', '.join(RULES)})".replace("%", "%%")
    )
    parser.add_argument("--error-control", choices=["holm", "bh", "none"], default="holm")
    args = parser.parse_args()
    modes = ["interleaved", "sequential"] if args.mode == "both" else [args.mode]
    rules = tuple(args.rule or RULES)
    designs = [Design(mode, args.rounds, args.trial_s, rules, args.error_control) for mode in modes]
    data = dataset()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        model = mlp_model(Path(folder) / "mlp.onnx")
        print(
            f"A/B: {model.name} against itself + extra work; {estimate_line(designs * len(args.extra), args.decisions)}"
        )
        for extra in args.extra:

            def pair(extra: float = extra) -> tuple[Runtime, Runtime]:
                return load(model), SlowedRuntime(load(model), extra=extra)

            print(f"+{extra:.0%} work per call", flush=True)
            results += [(extra, run_decisions(args.decisions, design, pair, data)) for design in designs]
    for extra, tally in results:
        target = TARGETS.get(round(extra, 2), "–")
        report(f"+{extra:.0%} slowdown caught", tally, rate_of="regression", target=target)


if __name__ == "__main__":
    main()
