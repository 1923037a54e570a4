"""The CI gate: is a candidate worse than its baseline, beyond noise?

rules (thresholds and the decision over every check), sources (runs, pytest-benchmark files), interleave
(A/B rounds of two served contenders), baseline (promote a run to a committed baseline), output (Markdown,
JUnit), command (``workbench gate``), pytest_plugin, canary (a live canary's promote/hold/rollback).
The statistics live in ``workbench.stats``."""
