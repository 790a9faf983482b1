"""Delayed tasks: recorded `scheduled`, published when due, by whichever replica gets there.

A delayed task lives only in the store until it is due, so a million of them cost rows, not
memory, and a producer restart loses none. Every replica polls for due tasks (one indexed
query, at most every POLL_S); claiming moves them to `queued` in the same statement, so two
replicas never publish the same task, and a claim whose publish fails stays in the outbox.
"""

from __future__ import annotations

import logging
import time

from conveyor.producer.store.delays import Delays
from conveyor.producer.store.submissions import Submissions
from conveyor.producer.submission.publisher import TaskPublisher
from conveyor.shared.background import BackgroundLoop

log = logging.getLogger(__name__)

POLL_S = 0.25


class DueTasks:
    """Publishes delayed tasks once they are due."""

    def __init__(self, delays: Delays, submissions: Submissions, publisher: TaskPublisher) -> None:
        self._delays = delays
        self._submissions = submissions
        self._publisher = publisher
        # A failed round is tried again after POLL_S. Claimed but unpublished tasks stay in
        # the outbox meanwhile; the sweeper sends them.
        self._polling = BackgroundLoop(
            "conveyor-due-tasks", self._publish_round, every_s=POLL_S, logger=log
        )

    def start(self) -> None:
        self._polling.start()

    async def stop(self) -> None:
        await self._polling.stop()

    async def publish_due(self) -> int:
        """Publish every task due now; how many."""
        published = 0
        while due := await self._delays.claim_due(time.time()):
            await self._publisher.publish_many(due)
            await self._submissions.mark_published([task.id for task in due])
            published += len(due)
        return published

    async def _publish_round(self) -> float:
        """Publish what is due; how long until the next task is (at once if some were
        published: more may be due; at most POLL_S)."""
        if await self.publish_due():
            return 0.0
        next_due = await self._delays.next_due()
        wait_s = POLL_S if next_due is None else next_due - time.time()
        return min(max(wait_s, 0.0), POLL_S)
