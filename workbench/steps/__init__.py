"""Build steps, one module per family; importing this package registers the built-in steps.

Each step takes an artifact and returns a new one at a new path (see ``workbench.steps.base``).
"""

from __future__ import annotations

from workbench.steps.base import STEPS, Step, StepConfig, StepContext
from workbench.steps.export import ExportOnnx, ExportOnnxConfig
from workbench.steps.quantize import QuantizeOrtDynamic, QuantizeOrtDynamicConfig

__all__ = [
    "STEPS",
    "ExportOnnx",
    "ExportOnnxConfig",
    "QuantizeOrtDynamic",
    "QuantizeOrtDynamicConfig",
    "Step",
    "StepConfig",
    "StepContext",
]
