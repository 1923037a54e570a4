"""Power of the CI gate: how often it catches a candidate that does 15% more work per call.

    .venv/bin/python benchmarks/gate_power.py --decisions 30

The candidate is the same small real ONNX model wrapped in a runtime that makes every call do 15%
more work: it keeps the CPU busy for 15% of the call's own duration (``_gate_support.SlowedRuntime``). Each
decision measures both with the workbench's in-process measurement and asks the gate about p50, p99
and throughput (``_gate_support.RULES``: +10%, +10%, -5%); detected = any rule declared a regression.
Target: at least 95%. Both designs are measured: interleaved rounds (paired) and sequential blocks.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _gate_support import RULES, Design, SlowedRuntime, dataset, load, mlp_model, report, run_decisions

from serving_harness.runtimes.base import Runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=8, help="rounds (interleaved) or trials per side (sequential)")
    parser.add_argument("--trial-s", type=float, default=0.1)
    parser.add_argument("--extra", type=float, default=0.15, help="extra work per call, share of a call")
    parser.add_argument("--mode", choices=["interleaved", "sequential", "both"], default="both")
    args = parser.parse_args()
    modes = ["interleaved", "sequential"] if args.mode == "both" else [args.mode]
    data = dataset()
    with tempfile.TemporaryDirectory() as folder:
        model = mlp_model(Path(folder) / "mlp.onnx")

        def pair() -> tuple[Runtime, Runtime]:
            return load(model), SlowedRuntime(load(model), extra=args.extra)

        print(
            f"A/B: {model.name} against itself +{args.extra:.0%} work, rules {', '.join(RULES)}, {args.decisions} decisions per design"
        )
        results = {
            mode: run_decisions(args.decisions, Design(mode, args.rounds, args.trial_s), pair, data) for mode in modes
        }
        for mode, (verdicts, seconds) in results.items():
            report(f"detection rate ({mode})", verdicts, seconds, rate_of="regression", target=">= 95%")


if __name__ == "__main__":
    main()
