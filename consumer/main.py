"""Wiring of the consumer service: settings -> connections -> topology -> worker -> signals."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket

from aio_pika.exceptions import AMQPError

from config import ConsumerSettings, load_settings
from consumer.cancellations import Cancellations
from consumer.checks import RunCheck
from consumer.handlers import builtin_handlers
from consumer.reporter import Reporter
from consumer.retries import Retrier
from consumer.sync_runner import SyncRunner
from consumer.worker import Worker
from shared.builtin_tasks import builtin_catalog
from shared.connection import connect
from shared.health import keep_alive
from shared.logs import configure_logging
from shared.runtime import run as run_on_loop
from shared.topology import Topology, declare_topology

log = logging.getLogger("consumer")


def new_worker_id() -> str:
    """hostname:pid:random, unique even when containers reuse hostnames and pids."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


async def serve(settings: ConsumerSettings, stop: asyncio.Event) -> Worker:
    """Consume until `stop` is set, then shut down gracefully; returns the finished worker."""
    worker_id = new_worker_id()
    topology = Topology.of(settings)
    consuming = await connect(settings, f"conveyor consumer {worker_id}")
    publishing = await connect(settings, f"conveyor consumer {worker_id} (publish)")
    try:
        setup = await consuming.channel()
        await declare_topology(setup, topology, settings.queues)
        await setup.close()
        reporter = Reporter(publishing, topology, events=settings.events)
        await reporter.start()
        run_check = RunCheck(publishing, topology)
        await run_check.start()
        retrier = Retrier(
            publishing,
            topology,
            backoff_s=settings.retry_backoff_s,
            backoff_max_s=settings.retry_backoff_max_s,
        )
        await retrier.start()
        cancellations = Cancellations(
            consuming, topology, run_check, on_cancel=lambda ids: worker.stop_tasks(ids)
        )
        worker = Worker(
            worker_id=worker_id,
            connection=consuming,
            reporter=reporter,
            catalog=builtin_catalog(settings.test_tasks),
            handlers=builtin_handlers(settings.smtp_url),
            topology=topology,
            queues=settings.queues,
            concurrency=settings.concurrency,
            prefetch=settings.prefetch,
            sync_runner=SyncRunner(
                settings.concurrency * len(settings.queues),
                max_rss_mb=settings.max_child_rss_mb,
                max_tasks_per_child=settings.max_tasks_per_child,
            ),
            run_check=run_check,
            retrier=retrier,
            ack_after_report=settings.ack_after_report,
            cancelled=cancellations,
            report_running_after_s=settings.report_running_after_s,
            max_result_bytes=settings.max_result_bytes,
        )
        await cancellations.start()  # before consuming: honour earlier cancellations
        await worker.start()
        await stop.wait()
        log.info("shutting down: no new tasks; grace %.1fs", settings.shutdown_grace_s)
        await worker.stop(settings.shutdown_grace_s)
        return worker
    finally:
        await consuming.close()
        await publishing.close()


async def _main(settings: ConsumerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    alive = asyncio.create_task(keep_alive(settings.health_file))
    try:
        await serve(settings, stop)
    finally:
        alive.cancel()
        await asyncio.gather(alive, return_exceptions=True)


def main() -> None:
    """Entry point of `python -m consumer` and `conveyor consumer`."""
    settings = load_settings(ConsumerSettings)
    configure_logging(settings.log_level, settings.log_format)
    try:
        run_on_loop(_main(settings), settings.event_loop)
    except AMQPError as error:
        # E.g. PRECONDITION_FAILED: a queue exists with other arguments (CONVEYOR_QUEUE_TYPE).
        log.error("consumer stopped: the broker refused our set-up: %s", error)
        raise SystemExit(1) from None
