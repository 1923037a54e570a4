"""The sweep: runner (a recipe end to end, resumable), space (the variants), strategies (grid, Optuna),
cache (build cache + lineage), quality (the accuracy check), endpoint (load on an external OIP endpoint)."""
