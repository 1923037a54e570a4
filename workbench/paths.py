"""Where the workbench keeps what it can rebuild: trained examples, source artifacts, build outputs."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "WORKBENCH_CACHE_DIR"


def cache_dir() -> Path:
    """``$WORKBENCH_CACHE_DIR``, or ``~/.cache/workbench``; created if missing."""
    configured = os.environ.get(CACHE_ENV)
    root = Path(configured).expanduser() if configured else Path.home() / ".cache" / "workbench"
    root.mkdir(parents=True, exist_ok=True)
    return root
