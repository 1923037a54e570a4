"""False alarms of the CI gate: A/A decisions (the same model against itself) on this machine.

    .venv/bin/python benchmarks/gate_false_alarm.py --decisions 30

Each decision measures two onnxruntime sessions of one small real ONNX model with the workbench's
in-process measurement and asks the gate about p50, p99 and throughput (``_gate_support.RULES``);
it is a false alarm when any rule is declared a regression. Target: at most 5%. Both designs are
measured: interleaved rounds (paired, the recommended mode) and two sequential blocks of trials.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _gate_support import RULES, Design, dataset, load, mlp_model, report, run_decisions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=8, help="rounds (interleaved) or trials per side (sequential)")
    parser.add_argument("--trial-s", type=float, default=0.1)
    parser.add_argument("--mode", choices=["interleaved", "sequential", "both"], default="both")
    args = parser.parse_args()
    modes = ["interleaved", "sequential"] if args.mode == "both" else [args.mode]
    with tempfile.TemporaryDirectory() as folder:
        model = mlp_model(Path(folder) / "mlp.onnx")
        print(f"A/A: {model.name} against itself, rules {', '.join(RULES)}, {args.decisions} decisions per design")
        results = {}
        for mode in modes:
            design = Design(mode=mode, rounds=args.rounds, trial_s=args.trial_s)
            results[mode] = run_decisions(args.decisions, design, lambda: (load(model), load(model)), dataset())
        for mode, (verdicts, seconds) in results.items():
            report(f"false-alarm rate ({mode})", verdicts, seconds, rate_of="regression", target="<= 5%")


if __name__ == "__main__":
    main()
