"""What a consumer tells Prometheus: its task outcomes, run times and queue waits.

Counted where they happen, once per run: a task retried twice counts three starts, two
retries and one success. The producer counts submissions and cancellations
(producer/monitoring/metrics.py) so that summing a metric over all services never counts one
thing twice.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Gauge

from conveyor.shared.envelope import TaskMessage
from conveyor.shared.metrics import RUN_BUCKETS_S, WAIT_BUCKETS_S, histogram, task_counter


class WorkerMetrics:
    """The consumer's metrics, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.started = task_counter(registry, "started", "Task runs started.")
        self.succeeded = task_counter(registry, "succeeded", "Task runs that succeeded.")
        self.failed = task_counter(
            registry, "failed", "Task runs that failed for good (no retry left, or permanent)."
        )
        self.retried = task_counter(registry, "retried", "Failed runs with a retry scheduled.")
        self.dead_lettered = task_counter(
            registry,
            "dead_lettered",
            "Messages this consumer dead-lettered (failed, undecodable, unknown task, "
            "invalid payload, delivery limit); task is 'unknown' when it could not be read.",
        )
        self.run_seconds = histogram(
            registry,
            "conveyor_task_run_seconds",
            "How long task handlers ran, by task and outcome.",
            RUN_BUCKETS_S,
            ["task", "outcome"],
        )
        self.queue_wait_seconds = histogram(
            registry,
            "conveyor_task_queue_wait_seconds",
            "From the moment a task entered its work queue (published, due, or its retry's "
            "delay over) to its start here; clocks of producer and consumer hosts included.",
            WAIT_BUCKETS_S,
            ["task"],
        )
        self.running = Gauge(
            "conveyor_worker_tasks_running",
            "Tasks running in this consumer now.",
            registry=registry,
        )


class RunMeter:
    """One run's measurements: counted as started when made, timed until `end`."""

    def __init__(self, metrics: WorkerMetrics, task: TaskMessage, first_delivery: bool) -> None:
        self._metrics = metrics
        self._task = task.task
        self._started = time.monotonic()
        metrics.started.labels(task.task).inc()
        metrics.running.inc()
        # A redelivered message waited for a consumer that died, not in the queue.
        if first_delivery and task.queued_at is not None:
            wait_s = max(0.0, time.time() - task.queued_at)
            metrics.queue_wait_seconds.labels(task.task).observe(wait_s)

    def end(self, outcome: str) -> None:
        self._metrics.running.dec()
        elapsed = time.monotonic() - self._started
        self._metrics.run_seconds.labels(self._task, outcome).observe(elapsed)
