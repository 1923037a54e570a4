"""What the tests that make real `workbench run`s share: the shortest measurement that still has trials."""

from __future__ import annotations

# --set overrides: 2 trials of 50 ms after 2 warm-up calls (at least 5 calls a trial). Figures from these are
# for behaviour, never for speed.
SHORT_MEASURE = [
    "measure.trials=2",
    "measure.trial_duration_s=0.05",
    "measure.warmup_iters=2",
    "measure.min_trial_iters=5",
]
