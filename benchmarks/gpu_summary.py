"""Ratios from a GPU run (``gpu_check.sh``): each variant to torch eager in-process, and served to in-process.

    python benchmarks/gpu_summary.py REPORTS/digits-gpu [--batch-size 32]

Reads the newest run's ``results.parquet`` under the folder. In-process throughput is taken at
``--batch-size`` (the recipes' objective batch); the served figure is the best served load step
(one row per request, the harness batching them), over the variant's own in-process figure at that
batch size. A variant that failed (no CUDA build of a runtime, no TensorRT) is printed with its
one-line reason: named as skipped, never left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def newest_results(folder: Path) -> Path:
    runs = sorted(p for p in folder.iterdir() if (p / "results.parquet").is_file())
    if not runs:
        raise SystemExit(f"no run with results.parquet under {folder}")
    return runs[-1] / "results.parquet"


def summary_lines(frame: pd.DataFrame, batch_size: int) -> list[str]:
    """One line per variant: status, in-process items/s, x eager, served items/s, served / in-process."""
    inprocess = frame[(frame["mode"] == "inprocess") & (frame["batch_size"] == batch_size)]
    rates = dict(zip(inprocess["pipeline"], inprocess["throughput_items_per_s"], strict=True))
    served = frame[frame["mode"] == "served"].groupby("pipeline")["throughput_items_per_s"].max().to_dict()
    eager = rates.get("torch-eager")
    lines = [f"{'variant':<20} {'items/s b' + str(batch_size):>12} {'x eager':>8} {'served':>9} {'served/in':>10}"]
    for pipeline in dict.fromkeys(frame["pipeline"]):
        rate = rates.get(pipeline)
        if rate is None:
            reason = frame.loc[frame["pipeline"] == pipeline, "reason"].dropna()
            lines.append(f"{pipeline:<20} skipped: {reason.iloc[0] if len(reason) else 'not measured'}")
            continue
        to_eager = f"{rate / eager:8.2f}" if eager else f"{'n/a':>8}"
        serve = served.get(pipeline)
        serve_text = f"{serve:9.1f} {serve / rate:10.2f}" if serve else f"{'n/a':>9} {'n/a':>10}"
        lines.append(f"{pipeline:<20} {rate:12.1f} {to_eager} {serve_text}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("folder", type=Path, help="the recipe's folder in the report store")
    parser.add_argument("--batch-size", type=int, default=32, help="the in-process batch size compared")
    args = parser.parse_args()
    path = newest_results(args.folder)
    print(f"{path.parent.name}:")
    print("\n".join(summary_lines(pd.read_parquet(path), args.batch_size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
