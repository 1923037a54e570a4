"""Build steps, one module per family; importing this package registers the built-in steps.

Each step takes an artifact and returns a new one at a new path (see ``workbench.steps.base``).
"""

from __future__ import annotations

from workbench.steps.base import STEPS, Step, StepConfig, StepContext
from workbench.steps.compile.ort import CompileOrtGraph, CompileOrtGraphConfig
from workbench.steps.compile.torch import CompileTensorRT, CompileTensorRTConfig, CompileTorch, CompileTorchConfig
from workbench.steps.export.onnx import ExportOnnx, ExportOnnxConfig
from workbench.steps.export.torch import (
    ExportTorchExport,
    ExportTorchExportConfig,
    ExportTorchScript,
    ExportTorchScriptConfig,
)
from workbench.steps.prune import PruneMagnitude, PruneMagnitudeConfig, PruneStructured, PruneStructuredConfig
from workbench.steps.quantize.ort import (
    QuantizeOrtDynamic,
    QuantizeOrtDynamicConfig,
    QuantizeOrtStatic,
    QuantizeOrtStaticConfig,
)
from workbench.steps.quantize.torch import (
    QuantizeFp16,
    QuantizeFp16Config,
    QuantizeTorchDynamic,
    QuantizeTorchDynamicConfig,
)

__all__ = [
    "STEPS",
    "CompileOrtGraph",
    "CompileOrtGraphConfig",
    "CompileTensorRT",
    "CompileTensorRTConfig",
    "CompileTorch",
    "CompileTorchConfig",
    "ExportOnnx",
    "ExportOnnxConfig",
    "ExportTorchExport",
    "ExportTorchExportConfig",
    "ExportTorchScript",
    "ExportTorchScriptConfig",
    "PruneMagnitude",
    "PruneMagnitudeConfig",
    "PruneStructured",
    "PruneStructuredConfig",
    "QuantizeFp16",
    "QuantizeFp16Config",
    "QuantizeOrtDynamic",
    "QuantizeOrtDynamicConfig",
    "QuantizeOrtStatic",
    "QuantizeOrtStaticConfig",
    "QuantizeTorchDynamic",
    "QuantizeTorchDynamicConfig",
    "Step",
    "StepConfig",
    "StepContext",
]
