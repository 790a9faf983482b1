"""Seeing into the system: the producer's Prometheus metrics (`metrics`), a periodic look at
queue depths, workers and the store for `/queues` and the gauges (`watch`), and the routes that
show them (`api`: `/workers`, `/queues`, `/stats`, `/metrics`).

Its HTTP routes live here (`api`): they only expose what `watch`, `metrics` and the stores
read, and the dashboard polls them.
"""
