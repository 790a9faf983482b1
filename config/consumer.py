"""Settings of the consumer service."""

from __future__ import annotations

from pydantic import Field

from conveyor.config.broker import BrokerSettings
from conveyor.config.logs import LogSettings
from conveyor.config.runtime import RuntimeSettings
from conveyor.config.tasks import TaskSettings


class ConsumerSettings(BrokerSettings, LogSettings, RuntimeSettings, TaskSettings):
    """Everything a consumer process reads at start."""

    prefetch: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Unacked deliveries per task slot; 1 gives fair dispatch.",
    )
    concurrency: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Task slots per consumer process, for each queue it serves.",
    )
    shutdown_grace_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="On SIGTERM, how long in-flight tasks may run before they are requeued.",
    )
    report_running_after_s: float = Field(
        default=0.1,
        ge=0,
        le=3600,
        description="Report `running` only for tasks still running after this long (0: always).",
    )
    retry_backoff_s: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="Delay before the first retry; doubles with each attempt (with jitter).",
    )
    retry_backoff_max_s: float = Field(
        default=300.0, gt=0, le=86_400, description="Longest delay between two attempts."
    )
    max_child_rss_mb: float | None = Field(
        default=1024.0,
        ge=64,
        description="Kill a sync handler's child process whose resident memory grows past "
        "this many MB (unset: no limit).",
    )
    max_tasks_per_child: int | None = Field(
        default=1000,
        ge=1,
        description="Replace a sync child process after this many tasks, so leaks cannot "
        "pile up (unset: never).",
    )
    events: bool = Field(
        default=True,
        description="Publish task status events (running/succeeded/failed) to the events exchange.",
    )
    log_tasks: bool = Field(
        default=True,
        description="Log one INFO line per finished task (succeeded, retrying, cancelled); "
        "failures and dead letters are logged as warnings either way.",
    )
    ack_after_report: bool = Field(
        default=False,
        description="Ack a task only once the broker confirmed its final status event: no "
        "record is left behind by a consumer killed right after a task, for one more round "
        "trip per task.",
    )
    worker_heartbeat_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often the consumer announces itself to the worker registry; three "
        "missed heartbeats show it as lost.",
    )
    metrics_host: str = Field(
        default="0.0.0.0",
        description="Address the consumer's Prometheus /metrics listens on.",
    )
    metrics_port: int | None = Field(
        default=9108,
        ge=0,
        le=65535,
        description="Port of the consumer's Prometheus /metrics (0: any free port, logged; "
        "unset: no metrics server).",
    )
