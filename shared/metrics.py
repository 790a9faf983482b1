"""Prometheus plumbing both services share: a registry per service and its text exposition.

Each service owns a `CollectorRegistry` (not the process-global one), so tests can build a
service's metrics twice in one process and read exactly that service's numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

# Task run times span milliseconds (echo) to hours (reports): 1 ms .. ~1 h, roughly x3 apart.
RUN_BUCKETS_S: Sequence[float] = (
    0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000, 3600,
)  # fmt: skip
# Waits in a queue and the event store's lag: from a few milliseconds to minutes of backlog.
WAIT_BUCKETS_S: Sequence[float] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
)  # fmt: skip
# A publish is confirmed in about a millisecond; CONVEYOR_PUBLISH_TIMEOUT_S caps it.
PUBLISH_BUCKETS_S: Sequence[float] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
)  # fmt: skip

CONTENT_TYPE = CONTENT_TYPE_LATEST


def task_counter(registry: CollectorRegistry, what: str, help_text: str) -> Counter:
    """`conveyor_tasks_<what>_total{task}`."""
    return Counter(f"conveyor_tasks_{what}", help_text, ["task"], registry=registry)


def histogram(
    registry: CollectorRegistry,
    name: str,
    help_text: str,
    buckets: Sequence[float],
    labels: Sequence[str] = (),
) -> Histogram:
    return Histogram(name, help_text, list(labels), buckets=buckets, registry=registry)


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format (what `/metrics` answers)."""
    return generate_latest(registry)


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> int | None:
    """Serve `/metrics` of `registry` on `host:port` from a daemon thread (port 0: any free
    one); the port it listens on, or None if it could not bind (logged: the service goes
    on without metrics rather than stop working)."""
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        log.error("metrics not served: cannot listen on %s:%d (%s)", host, port, error)
        return None
    bound = int(server.server_port)
    log.info("metrics at http://%s:%d/metrics", host, bound)
    return bound
