"""workbench: benchmark, optimize and ship ML inference.

import workbench as wb
path = wb.run("recipes/digits-cpu.yaml")
runs = wb.load_runs("reports/")        # one row per variant × measurement
"""

from workbench.api import load_report, load_runs, run
from workbench.errors import (
    BuildError,
    MeasurementError,
    MissingDependencyError,
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
    "NotFoundError",
    "RecipeError",
    "UsageError",
    "WorkbenchError",
    "__version__",
    "load_report",
    "load_runs",
    "run",
]
