"""Importing this module registers the bundled examples (``EXAMPLES`` imports it on first lookup)."""

from workbench.examples import digits, images, minilm  # noqa: F401
