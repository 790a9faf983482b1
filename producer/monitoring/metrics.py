"""What a producer tells Prometheus: submissions, cancellations, publish latency, and the
state of the whole system as it reads it from the broker and the store.

Task outcomes (started, succeeded, ...) are counted by the consumers, submissions and
cancellations here: summing a metric over all services never counts one thing twice. The
gauges (queue depth, workers, oldest queued task, dead letters) read shared state, so every
producer replica reports the same value: aggregate them with max(), not sum().
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Gauge

from conveyor.shared.events import TaskEvent
from conveyor.shared.metrics import PUBLISH_BUCKETS_S, WAIT_BUCKETS_S, histogram, task_counter


class ProducerMetrics:
    """The producer's metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.submitted = task_counter(registry, "submitted", "Tasks accepted (recorded).")
        self.cancelled = task_counter(registry, "cancelled", "Tasks cancelled on request.")
        self.publish_seconds = histogram(
            registry,
            "conveyor_publish_seconds",
            "From publishing a submission's tasks to the broker's last confirm.",
            PUBLISH_BUCKETS_S,
        )
        self.event_store_lag_seconds = histogram(
            registry,
            "conveyor_event_store_lag_seconds",
            "From a consumer's status event to its commit in the task store.",
            WAIT_BUCKETS_S,
        )
        self.queue_messages = Gauge(
            "conveyor_queue_messages",
            "Messages ready in each work queue (read from the broker).",
            ["queue"],
            registry=registry,
        )
        self.queue_consumers = Gauge(
            "conveyor_queue_consumers",
            "Consumers (task slots) on each work queue (read from the broker).",
            ["queue"],
            registry=registry,
        )
        self.oldest_queued_seconds = Gauge(
            "conveyor_oldest_queued_task_age_seconds",
            "Age of the oldest task waiting in `queued` (0 when none waits).",
            registry=registry,
        )
        self.dead_letters = Gauge(
            "conveyor_dead_letters",
            "Dead letters kept (not requeued or purged).",
            registry=registry,
        )
        self.workers = Gauge(
            "conveyor_workers", "Consumers in the registry, by state.", ["state"], registry=registry
        )

    def applied(self, events: Iterable[TaskEvent], now: float) -> None:
        """Events just committed to the store: how late they got there."""
        for event in events:
            self.event_store_lag_seconds.observe(max(0.0, now - event.at))
