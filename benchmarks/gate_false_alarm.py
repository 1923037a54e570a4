"""False alarms of the CI gate: A/A decisions (the same model against itself) on this machine.

    .venv/bin/python benchmarks/gate_false_alarm.py                 # 200 decisions per arm (~15 min on 2 cores)
    .venv/bin/python benchmarks/gate_false_alarm.py --decisions 10   # a quick check that it runs

Each decision measures two onnxruntime sessions of one small real ONNX model with the workbench's
in-process measurement and asks the gate about p50, p99 and throughput (``_gate_support.RULES``);
it is a false alarm when the decision, over all its checks (the gate's error control across checks
included, Holm by default), is a regression. Both arms get the same trials per side: interleaved rounds
(paired, one trial per side per round) and two sequential blocks of as many trials. Each rate is printed
with its Wilson 95% interval. Target: at most 5%, with the upper bound at most 8%.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _gate_support import RULES, Design, dataset, estimate_line, load, mlp_model, report, run_decisions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=200, help="decisions per arm")
    parser.add_argument("--rounds", type=int, default=8, help="trials per side (one per round when interleaved)")
    parser.add_argument("--trial-s", type=float, default=0.1)
    parser.add_argument("--mode", choices=["interleaved", "sequential", "both"], default="both")
    parser.add_argument(
        "--rule", action="append", help=f"a gate rule (repeatable; default {', '.join(RULES)})".replace("%", "%%")
    )
    parser.add_argument("--error-control", choices=["holm", "bh", "none"], default="holm")
    args = parser.parse_args()
    modes = ["interleaved", "sequential"] if args.mode == "both" else [args.mode]
    rules = tuple(args.rule or RULES)
    designs = [Design(mode, args.rounds, args.trial_s, rules, args.error_control) for mode in modes]
    with tempfile.TemporaryDirectory() as folder:
        model = mlp_model(Path(folder) / "mlp.onnx")
        print(f"A/A: {model.name} against itself; {estimate_line(designs, args.decisions)}", flush=True)
        tallies = [run_decisions(args.decisions, d, lambda: (load(model), load(model)), dataset()) for d in designs]
    for tally in tallies:
        report("A/A false alarms", tally, rate_of="regression", target="≤ 5%, upper bound ≤ 8%")


if __name__ == "__main__":
    main()
