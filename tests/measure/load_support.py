"""Constants shared by the load engine's tests (a module of its own: conftest is not importable by name)."""

from __future__ import annotations

from typing import Any

SERVICE_MS = 5.0
MODEL = "sleepy"
FEATURES = 4

# Short windows: each step is a few seconds of load on a 2-core machine.
FAST: dict[str, Any] = {
    "warmup_s": 0.5,
    "window_s": 0.5,
    "min_windows": 3,
    "max_windows": 4,
    "min_requests": 50,
    "tolerance": 0.5,
    "latency_tolerance": 1.0,
}
