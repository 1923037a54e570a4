"""serving_harness: an Open Inference Protocol v2 server with dynamic batching and Prometheus metrics.

It ships inside bundles and never imports ``workbench``.
"""

from serving_harness.config import BatchingSettings, LimitsSettings, RuntimeSettings, ServingConfig
from serving_harness.errors import HarnessError

__all__ = ["BatchingSettings", "HarnessError", "LimitsSettings", "RuntimeSettings", "ServingConfig"]
__version__ = "0.1.0"
