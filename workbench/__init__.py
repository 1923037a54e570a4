"""workbench: benchmark, optimize and ship ML inference.

import workbench as wb
path = wb.run("recipes/digits-cpu.yaml")
runs = wb.load_runs("reports/")        # one row per variant × measurement
best = wb.select("latest", constraints=["latency_ms.p99<=20"])   # raises when nothing is feasible
diff = wb.compare("digits-cpu/0001", "digits-cpu/0002")            # ratios with bootstrap intervals
bundle = wb.export("latest", out="bundles/digits-1.2.0")            # a deployable, monitored bundle
"""

from workbench._api import compare, export, load_report, load_runs, run, select
from workbench.errors import (
    BuildError,
    MeasurementError,
    MissingDependencyError,
    NoFeasibleVariant,
    NotFoundError,
    RecipeError,
    UsageError,
    WorkbenchError,
)

__version__ = "0.1.0"

__all__ = [
    "BuildError",
    "MeasurementError",
    "MissingDependencyError",
    "NoFeasibleVariant",
    "NotFoundError",
    "RecipeError",
    "UsageError",
    "WorkbenchError",
    "__version__",
    "compare",
    "export",
    "load_report",
    "load_runs",
    "run",
    "select",
]
