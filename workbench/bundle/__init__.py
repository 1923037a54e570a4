"""Bundles: a run's chosen variant as a directory (and ``.tar.gz``) that ``serving_harness`` serves alone.

``export_bundle`` writes it; ``serving_harness.bundle`` loads and verifies it where it runs.
"""

from workbench.bundle.deploy import DeployOptions
from workbench.bundle.export import ExportedBundle, export_bundle

__all__ = ["DeployOptions", "ExportedBundle", "export_bundle"]
