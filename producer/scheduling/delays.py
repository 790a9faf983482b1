"""Delayed tasks: recorded `scheduled`, published when due, by whichever replica gets there.

A delayed task lives only in the store until it is due, so a million of them cost rows, not
memory, and a producer restart loses none. Every replica polls for due tasks (one indexed
query, at most every POLL_S); claiming moves them to `queued` in the same statement, so two
replicas never publish the same task, and a claim whose publish fails stays in the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time

from conveyor.producer.store.delays import Delays
from conveyor.producer.store.submissions import Submissions
from conveyor.producer.submission.publisher import TaskPublisher

log = logging.getLogger(__name__)

POLL_S = 0.25


class DueTasks:
    """Publishes delayed tasks once they are due."""

    def __init__(self, delays: Delays, submissions: Submissions, publisher: TaskPublisher) -> None:
        self._delays = delays
        self._submissions = submissions
        self._publisher = publisher
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="conveyor-due-tasks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def publish_due(self) -> int:
        """Publish every task due now; how many."""
        published = 0
        while due := await self._delays.claim_due(time.time()):
            await self._publisher.publish_many(due)
            await self._submissions.mark_published([task.id for task in due])
            published += len(due)
        return published

    async def _run_forever(self) -> None:
        while True:
            try:
                if await self.publish_due():
                    continue
                next_due = await self._delays.next_due()
            except Exception as error:
                # Claimed but unpublished tasks stay in the outbox; the sweeper sends them.
                log.warning("publishing due tasks failed, will retry: %r", error)
                next_due = None
            wait_s = POLL_S if next_due is None else next_due - time.time()
            await asyncio.sleep(min(max(wait_s, 0.0), POLL_S))
