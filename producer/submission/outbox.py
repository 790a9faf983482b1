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
from conveyor.shared.background import BackgroundLoop

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
        # Woken by `mark`. A failed flush is tried again after RETRY_DELAY_S (unmarked
        # records are published again by the sweeper meanwhile: late, never lost).
        self._flushing = BackgroundLoop(
            "conveyor-published-marks",
            self._flush_after_linger,
            every_s=None,
            retry_s=RETRY_DELAY_S,
            wait_first=True,
            logger=log,
        )

    def start(self) -> None:
        self._flushing.start()

    async def stop(self) -> None:
        """Write what is pending (bounded), then stop."""
        await self._flushing.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._flush()

    def mark(self, ids: Iterable[str]) -> None:
        self._pending.extend(ids)
        self._flushing.wake()

    async def _flush_after_linger(self) -> None:
        await asyncio.sleep(LINGER_S)  # the marks of a busy producer gather into one UPDATE
        await self._flush()

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_IDS], self._pending[MAX_IDS:]
            try:
                await self._submissions.mark_published(batch)
            except BaseException:
                self._pending[:0] = batch  # the next flush writes them
                raise
