"""A model whose cost you set: a torch artifact whose forward sleeps a fixed time per batch.

Served with ``instances: 1`` its capacity is known (about ``1000 / service_ms`` requests per second),
which is what checking a load rig needs: the SLA search should land just under that rate, and a
closed loop of one user should see about ``service_ms`` of latency plus the server's overhead.

Example::

    path = write_fixed_service_artifact(tmp_path / "sleepy", service_ms=10.0)
    # python -m serving_harness serve --model {path} --name sleepy --settings-json '{"instances": 1}'
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["FACTORY", "fixed_service_time", "write_fixed_service_artifact"]

FACTORY = "workbench.measure.load.fixed_service:fixed_service_time"


def fixed_service_time(service_ms: float = 10.0) -> Any:
    """A torch module that sleeps ``service_ms`` per call and returns its input doubled."""
    import torch

    class FixedServiceTime(torch.nn.Module):
        def __init__(self, delay_s: float) -> None:
            super().__init__()
            self.delay_s = delay_s

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(self.delay_s)  # releases the GIL, like a kernel would
            return x * 2

    return FixedServiceTime(service_ms / 1000.0)


def write_fixed_service_artifact(folder: Path, *, service_ms: float, features: int = 4) -> Path:
    """Write a torch-factory artifact directory (``model.json`` + ``weights.pt``) for the harness."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    tensor = {"datatype": "FP32", "shape": [-1, features]}
    description = {
        "format": "torch-factory",
        "factory": FACTORY,
        "kwargs": {"service_ms": service_ms},
        "inputs": [{"name": "x", **tensor}],
        "outputs": [{"name": "y", **tensor}],
    }
    (folder / "model.json").write_text(json.dumps(description, indent=2))
    torch.save({}, folder / "weights.pt")
    return folder
