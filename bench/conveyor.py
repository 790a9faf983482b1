"""Conveyor's side of the benchmark, used only through its public surface.

Publishing goes through `open_submitter` (the in-process Python API: a whole producer
service, Recorder included, on the run's own database), consuming through
`python -m conveyor.consumer` processes configured by CONVEYOR_* variables, latency
completions through the `succeeded` status events on `{ns}.events`.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Literal

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pydantic import SecretStr

from bench.common import CONFIRM_WINDOW, CONVEYOR_QUEUE, Names, child_env
from conveyor.config import ProducerSettings
from conveyor.producer.service import open_submitter
from conveyor.producer.submission.submitter import Submitter, TaskSubmission
from conveyor.shared.events import EVENTS_ROUTING_KEY, decode_events
from conveyor.shared.records import TaskStatus

CONSUMER_ARGV = [sys.executable, "-m", "conveyor.consumer"]


def producer_settings(
    url: str, names: Names, queue_type: Literal["quorum", "classic"], database_url: str
) -> ProducerSettings:
    """Producer settings of the run (explicit, so stray CONVEYOR_* variables don't leak in).

    `database_url` is the run's own database: without it the store would be `conveyor.db`
    in the current directory, shared with whatever else runs there.
    """
    return ProducerSettings(
        amqp_url=SecretStr(url),
        namespace=names.namespace,
        queue_type=queue_type,
        queues=[CONVEYOR_QUEUE],
        confirm_window=CONFIRM_WINDOW,
        database_url=SecretStr(database_url),
    )


@asynccontextmanager
async def submitter_for(
    settings: ProducerSettings, connect_timeout_s: float = 30.0
) -> AsyncIterator[Submitter]:
    """open_submitter with a deadline on connecting (it otherwise retries forever)."""
    async with AsyncExitStack() as stack:
        async with asyncio.timeout(connect_timeout_s):
            submitter = await stack.enter_async_context(open_submitter(settings))
        yield submitter


def submissions(tasks: int) -> list[TaskSubmission]:
    """N no-op `echo` submissions (built before the clock starts)."""
    return [TaskSubmission(task="echo", payload={"i": i}) for i in range(tasks)]


def consumer_env(
    url: str,
    names: Names,
    queue_type: str,
    loop: str,
    events: bool,
    health_file: Path,
    log_tasks: bool = True,
) -> dict[str, str]:
    """CONVEYOR_* settings of one bench consumer: 1 slot, prefetch 1, the run's loop.

    The health file is the run's own, so bench consumers never vouch for someone else's.
    """
    return child_env(
        {
            "CONVEYOR_HEALTH_FILE": str(health_file),
            "CONVEYOR_AMQP_URL": url,
            "CONVEYOR_NAMESPACE": names.namespace,
            "CONVEYOR_QUEUE_TYPE": queue_type,
            "CONVEYOR_QUEUES": CONVEYOR_QUEUE,
            "CONVEYOR_CONCURRENCY": "1",
            "CONVEYOR_PREFETCH": "1",
            "CONVEYOR_EVENTS": "true" if events else "false",
            "CONVEYOR_EVENT_LOOP": loop,
            "CONVEYOR_LOG_LEVEL": "INFO",
            "CONVEYOR_LOG_TASKS": "true" if log_tasks else "false",
            "CONVEYOR_SHUTDOWN_GRACE_S": "5",
            "CONVEYOR_METRICS_PORT": "0",  # two consumers on one host: any free port each
        }
    )


async def subscribe_succeeded(
    channel: AbstractChannel, names: Names, completions: dict[str, float]
) -> AbstractQueue:
    """An exclusive auto-delete queue on the status events; records when tasks succeeded."""
    queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
    await queue.bind(names.conveyor.events_exchange, routing_key=EVENTS_ROUTING_KEY)

    async def on_event(message: AbstractIncomingMessage) -> None:
        at = time.perf_counter()
        for event in decode_events(message.body):
            if event.state is TaskStatus.SUCCEEDED:
                completions[event.task_id] = at

    await queue.consume(on_event, no_ack=True)
    return queue


def latency_sender(submitter: Submitter) -> Callable[[int], Awaitable[str]]:
    """send(i) for paced_latency: one Submitter.submit through the public API."""

    async def send(i: int) -> str:
        task = await submitter.submit(TaskSubmission(task="echo", payload={"i": i}))
        return task.id

    return send
