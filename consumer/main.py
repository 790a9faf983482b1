"""Wiring of the consumer service: settings -> connections -> topology -> worker -> signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import AMQPError
from aiormq.exceptions import ChannelAccessRefused, ChannelPreconditionFailed

from conveyor.config import ConsumerSettings, load_settings, redact_text
from conveyor.consumer.cancellations import Cancellations
from conveyor.consumer.checks import RunCheck
from conveyor.consumer.heartbeat import HeartbeatSender
from conveyor.consumer.metrics import WorkerMetrics
from conveyor.consumer.reporter import Reporter
from conveyor.consumer.retries import Retrier
from conveyor.consumer.sync_runner import SyncRunner
from conveyor.consumer.worker import Worker
from conveyor.shared.catalog import Catalog
from conveyor.shared.connection import connect
from conveyor.shared.health import AliveFile
from conveyor.shared.logs import configure_logging
from conveyor.shared.metrics import serve_metrics
from conveyor.shared.runtime import run as run_on_loop
from conveyor.shared.task_loader import load_catalog, load_catalog_or_exit
from conveyor.shared.tasks import Task
from conveyor.shared.topology import Topology, declare_topology

log = logging.getLogger("conveyor.consumer")


def new_worker_id() -> str:
    """hostname:pid:random, unique even when containers reuse hostnames and pids."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


# The broker refused our set-up as such (a queue declared with other arguments, a vhost we
# may not use): trying again cannot help, so the process stops and says why.
REFUSED_SET_UP = (ChannelPreconditionFailed, ChannelAccessRefused)
MAX_SET_UP_DELAY_S = 30.0


async def serve(settings: ConsumerSettings, stop: asyncio.Event) -> Worker | None:
    """Serve the tasks of CONVEYOR_TASKS until `stop` is set, then shut down gracefully;
    returns the finished worker (None if `stop` came before the worker could start).

    A broker that drops us in the middle of the set-up (it restarts, a connection is
    force-closed) is waited for: the set-up starts over on fresh connections.
    """
    tasks, catalog = load_catalog(settings)  # main() checked it loads
    worker_id = new_worker_id()
    metrics = WorkerMetrics()
    if settings.metrics_port is not None:
        serve_metrics(metrics.registry, settings.metrics_host, settings.metrics_port)
    delay_s = settings.reconnect_interval_s
    while not stop.is_set():
        connections: list[AbstractRobustConnection] = []
        try:
            worker, heartbeat = await _start_worker(
                settings, Served(tasks, catalog), worker_id, metrics, connections
            )
        except REFUSED_SET_UP:
            await _close(connections)
            raise
        except Exception as error:
            await _close(connections)
            log.warning(
                "start-up interrupted (%s); starting over in %.0fs",
                redact_text(repr(error)),
                delay_s,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay_s)
            delay_s = min(delay_s * 2, MAX_SET_UP_DELAY_S)
            continue
        try:
            await stop.wait()
            log.info("shutting down: no new tasks; grace %.1fs", settings.shutdown_grace_s)
            await worker.stop(settings.shutdown_grace_s)
            await heartbeat.stop()  # `offline`, with the final counts
            return worker
        finally:
            await _close(connections)
    return None


@dataclass(frozen=True, slots=True)
class Served:
    """The tasks this consumer serves and their catalog (options resolved)."""

    tasks: Mapping[str, Task]
    catalog: Catalog


async def _start_worker(
    settings: ConsumerSettings,
    served: Served,
    worker_id: str,
    metrics: WorkerMetrics,
    connections: list[AbstractRobustConnection],
) -> tuple[Worker, HeartbeatSender]:
    """Connect, declare the topology and start consuming; `connections` collects what was
    opened, for the caller to close. A failure part-way stops what had started."""
    topology = Topology.of(settings)
    consuming = await connect(settings, f"conveyor consumer {worker_id}")
    connections.append(consuming)
    publishing = await connect(settings, f"conveyor consumer {worker_id} (publish)")
    connections.append(publishing)
    reporter = Reporter(publishing, topology, events=settings.events)
    run_check = RunCheck(publishing, topology)
    retrier = Retrier(
        publishing,
        topology,
        backoff_s=settings.retry_backoff_s,
        backoff_max_s=settings.retry_backoff_max_s,
    )
    cancellations = Cancellations(
        consuming, topology, run_check, on_cancel=lambda ids: worker.stop_tasks(ids)
    )
    worker = Worker(
        worker_id=worker_id,
        connection=consuming,
        reporter=reporter,
        catalog=served.catalog,
        tasks=served.tasks,
        topology=topology,
        queues=settings.queues,
        concurrency=settings.concurrency,
        prefetch=settings.prefetch,
        sync_runner=SyncRunner(
            settings.concurrency * len(settings.queues),
            max_rss_mb=settings.max_child_rss_mb,
            max_tasks_per_child=settings.max_tasks_per_child,
            log_setup=(settings.log_level, settings.log_format),
        ),
        run_check=run_check,
        retrier=retrier,
        ack_after_report=settings.ack_after_report,
        cancelled=cancellations,
        report_running_after_s=settings.report_running_after_s,
        max_result_bytes=settings.max_result_bytes,
        metrics=metrics,
        log_tasks=settings.log_tasks,
    )
    heartbeat = HeartbeatSender(
        publishing,
        topology,
        worker_id=worker_id,
        concurrency=settings.concurrency,
        queues=settings.queues,
        tasks=sorted(served.tasks),
        interval_s=settings.worker_heartbeat_s,
        status=worker.status,
        # The route to any node of the list tells the address others know this host by.
        broker_host=urlsplit(settings.amqp_urls()[0]).hostname or "localhost",
    )
    try:
        setup = await consuming.channel()
        await declare_topology(setup, topology, settings.queues)
        await setup.close()
        await reporter.start()
        await run_check.start()
        await retrier.start()
        await cancellations.start()  # before consuming: honour earlier cancellations
        await worker.start()
        await heartbeat.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await worker.stop(0)
        await heartbeat.stop()
        raise
    return worker, heartbeat


async def _close(connections: list[AbstractRobustConnection]) -> None:
    for connection in connections:
        with contextlib.suppress(Exception):
            await connection.close()


async def _main(settings: ConsumerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    alive = AliveFile(settings.health_file)
    alive.start()
    try:
        await serve(settings, stop)
    finally:
        await alive.stop()


def main() -> None:
    """Entry point of `python -m conveyor.consumer` and `conveyor consumer`."""
    settings = load_settings(ConsumerSettings)
    configure_logging(settings.log_level, settings.log_format)
    load_catalog_or_exit(settings)  # a bad task module stops us here, before any connection
    try:
        run_on_loop(_main(settings), settings.event_loop)
    except AMQPError as error:
        # E.g. PRECONDITION_FAILED: a queue exists with other arguments (CONVEYOR_QUEUE_TYPE).
        log.error("consumer stopped: the broker refused our set-up: %s", error)
        raise SystemExit(1) from None
