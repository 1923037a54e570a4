"""The digits catalogue on a local Ray cluster of 1 node vs 2: wall time, and each variant's spread between the modes.

usage: python benchmarks/ray_scaleout.py [RECIPE] [--set KEY=VALUE ...]

Runs RECIPE (default recipes/digits-cpu-catalogue.yaml, in-process only) on `local:1` and on `local:2`, each with a
fresh report store and a warm build cache (a first run fills it), and prints the wall time of each and, per
variant, the in-process throughput at the objective's batch size in both modes and their ratio. Two local nodes
share this machine's cores: the speed-up it shows is what a machine with cores to spare gives (say which when
quoting it); on a 2-core machine the modes compete for the same cores and the figures only show that they agree.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import psutil

from workbench.recipe.loader import load_recipe
from workbench.sweep.runner import run_recipe

ROOT = Path(__file__).parents[1]


def _arguments() -> tuple[Path, list[str]]:
    args = sys.argv[1:]
    recipe = (
        Path(args.pop(0)) if args and not args[0].startswith("--") else ROOT / "recipes" / "digits-cpu-catalogue.yaml"
    )
    overrides = [a.removeprefix("--set=") for a in args if a.startswith("--set=")]
    overrides += [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    return recipe, ["load.enabled=false", *overrides]


def _timed_run(recipe: Path, overrides: list[str], cluster: str | None) -> tuple[float, dict[str, float]]:
    """Wall seconds of one run and each ok variant's in-process items/s at the objective's batch size."""
    spec = load_recipe(recipe, overrides)
    started = time.perf_counter()
    run = run_recipe(spec, reports=tempfile.mkdtemp(prefix="ray-scaleout-"), cluster=cluster)
    wall_s = time.perf_counter() - started
    frame = run.read_results()
    ok = frame[(frame["status"] == "ok") & (frame["mode"] == "inprocess")]
    batch = spec.objective.batch_size or int(ok["batch_size"].max())
    rows = ok[ok["batch_size"] == batch]
    return wall_s, {str(r["variant"]): float(r["throughput_items_per_s"]) for _, r in rows.iterrows()}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    recipe, overrides = _arguments()
    cores = psutil.cpu_count(logical=True)
    print(f"machine: {platform.processor() or platform.machine()}, {cores} logical cores; recipe {recipe.name}")
    _timed_run(recipe, overrides, None)  # fills the build cache: both modes then time measurement, not builds
    one_s, one = _timed_run(recipe, overrides, "local:1")
    two_s, two = _timed_run(recipe, overrides, "local:2")
    print(f"wall time: 1 node {one_s:.1f} s, 2 nodes {two_s:.1f} s (x{one_s / two_s:.2f})")
    print(f"{'variant':<28} {'1 node items/s':>16} {'2 nodes items/s':>16} {'2/1':>6}")
    for variant in sorted(one.keys() & two.keys()):
        print(f"{variant:<28} {one[variant]:>16.1f} {two[variant]:>16.1f} {two[variant] / one[variant]:>6.2f}")


if __name__ == "__main__":
    main()
