"""Deciding from measurements: select (constraints, objectives, Pareto), compare (two runs), cost per 1M."""
