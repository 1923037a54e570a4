"""workbench: benchmark, optimize and ship ML inference."""

__version__ = "0.1.0"
