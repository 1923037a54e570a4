"""Served load: engine (Locust in subprocesses, one load step at a time), profiles (data shaped like
Locust's tick()), windows (per-window figures from µs samples), sla (the highest rate that meets a p99 bound),
generator, payloads, wire + locustfile (what runs inside Locust), fixed_service (a model whose cost you set)."""
