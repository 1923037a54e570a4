"""Measurement: inprocess (a runtime called directly), server (the harness as a subprocess), load/ (Locust),
server_metrics (the harness's /metrics), usage (CPU and memory of a process tree). It never writes a report."""
