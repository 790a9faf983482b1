"""The producers' answer to "may I run this redelivered task?", over real RabbitMQ.

A consumer that lost its node between a task's run and its ack sends the task's events again
once it has reconnected, while the broker has already redelivered the task elsewhere. The
answer waits a moment for those late events, so the task is not run a second time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aio_pika.abc import AbstractRobustConnection

from conveyor.consumer.checks import RunCheck
from conveyor.producer.runs.checks import RunChecks
from conveyor.producer.runs.waiters import Waiters
from conveyor.producer.store.database import TaskStore
from conveyor.producer.store.submissions import NewTask
from conveyor.shared.envelope import TaskMessage
from conveyor.shared.events import make_event
from conveyor.shared.ids import new_task_id
from conveyor.shared.records import TaskStatus
from conveyor.shared.topology import Topology
from tests.support import wait_until


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TaskStore]:
    opened = await TaskStore.open(f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}")
    yield opened
    await opened.close()


async def _queued(store: TaskStore) -> str:
    message = TaskMessage(id=new_task_id(), task="echo", queue="default", payload={})
    [(record, _)] = await store.submissions.add([NewTask(message, 3, 300.0)])
    return record.id


Checks = Callable[[float], Awaitable[tuple[RunCheck, Waiters]]]


@pytest.fixture
async def checks(
    broker: AbstractRobustConnection, topology: Topology, store: TaskStore
) -> AsyncIterator[Checks]:
    """`await checks(grace_s)`: a producer's RunChecks on `store` and a consumer's RunCheck.
    Stopped before the store closes: an answer still waiting out its grace must not read a
    closed store (it would open a database connection nobody closes)."""
    started: list[RunChecks] = []

    async def start(grace_s: float) -> tuple[RunCheck, Waiters]:
        waiters = Waiters()
        answering = RunChecks(
            broker,
            topology,
            store.records,
            store.cancellations,
            store.redeliveries,
            waiters,
            late_events_grace_s=grace_s,
        )
        started.append(answering)
        await answering.start()
        check = RunCheck(broker, topology, timeout_s=10)
        await check.start()
        return check, waiters

    yield start
    for answering in started:
        await answering.stop()


async def test_a_redelivered_task_whose_success_arrives_late_is_not_run_again(
    checks: Checks, store: TaskStore
) -> None:
    check, waiters = await checks(8)
    task_id = await _queued(store)
    asking = asyncio.create_task(check.verdict(task_id, redelivered=True))
    # The question is in (the answer is waiting for late events); now the success lands.
    await wait_until(lambda: task_id in waiters.watched(), 10, "the run check to arrive")
    done = make_event(task_id, "echo", TaskStatus.SUCCEEDED, 1, "w1", result=1)
    assert await store.events.apply([done]) == {task_id}
    waiters.notify([task_id])
    verdict = await asyncio.wait_for(asking, 10)
    assert (verdict.run, verdict.finished_as) == (False, "succeeded")


async def test_a_redelivered_task_with_no_late_events_runs_after_the_grace(
    checks: Checks, store: TaskStore
) -> None:
    check, _ = await checks(0.5)
    task_id = await _queued(store)
    asked = time.monotonic()
    verdict = await check.verdict(task_id, redelivered=True)
    assert verdict.run is True
    assert time.monotonic() - asked >= 0.5  # it did wait for late events first


async def test_a_resent_task_is_answered_at_once(checks: Checks, store: TaskStore) -> None:
    # Re-sent by the outbox (not redelivered): its first copy, if any, is not late events.
    check, _ = await checks(30)
    task_id = await _queued(store)
    verdict = await asyncio.wait_for(check.verdict(task_id, redelivered=False), 8)
    assert verdict.run is True


async def test_only_the_first_redelivery_waits_for_late_events(
    checks: Checks, store: TaskStore
) -> None:
    # A task whose consumers keep dying must not spend its deliveries waiting.
    check, waiters = await checks(30)
    task_id = await _queued(store)
    asking = asyncio.create_task(check.verdict(task_id, redelivered=True))  # waits the grace
    await wait_until(lambda: task_id in waiters.watched(), 10, "the first question to wait")
    again = await asyncio.wait_for(check.verdict(task_id, redelivered=True), 8)
    assert again.run is True and not asking.done()
    asking.cancel()
