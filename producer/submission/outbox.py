"""Marking published tasks in batches, off the submission's path.

A submission is recorded (unpublished), published with confirms, then marked published. The
mark needs no wait: losing it costs a second publish (the outbox sweeper sends the record
again, flagged as re-sent, after CONVEYOR_OUTBOX_RESEND_AFTER_S), never a lost task. So marks
gather for up to LINGER_S and go out as one UPDATE: a submission costs one transaction,
not two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from conveyor.producer.store.submissions import Submissions

log = logging.getLogger(__name__)

# Long enough for a busy producer to gather many marks into one UPDATE (sequential submits
# at 250/s gave one mark per flush at 5 ms), short beside CONVEYOR_OUTBOX_RESEND_AFTER_S.
LINGER_S = 0.1
MAX_IDS = 1_000
RETRY_DELAY_S = 1.0


class PublishedMarks:
    """`mark(ids)` returns at once; a background task writes the marks in batches."""

    def __init__(self, submissions: Submissions) -> None:
        self._submissions = submissions
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="conveyor-published-marks")

    async def stop(self) -> None:
        """Write what is pending (bounded), then stop."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._flush()

    def mark(self, ids: Iterable[str]) -> None:
        self._pending.extend(ids)
        self._wake.set()

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(LINGER_S)
            try:
                await self._flush()
            except Exception as error:
                # Unmarked records are published again by the sweeper: late, never lost.
                log.warning("could not mark %d tasks published: %r", len(self._pending), error)
                await asyncio.sleep(RETRY_DELAY_S)

    async def _flush(self) -> None:
        self._wake.clear()
        while self._pending:
            batch, self._pending = self._pending[:MAX_IDS], self._pending[MAX_IDS:]
            try:
                await self._submissions.mark_published(batch)
            except BaseException:
                self._pending[:0] = batch
                self._wake.set()
                raise
