"""Background upkeep of the store, on every replica: the outbox sweeper and retention.

Outbox: a record is written before its publish and marked published after the broker's
confirm. A producer that dies in between leaves a record the broker never saw; the sweeper
publishes it again (flagged as re-sent, so consumers check before running it). Retention:
finished records older than the TTL are deleted.
"""

from __future__ import annotations

import logging
import time

from conveyor.producer.store.retention import Retention
from conveyor.producer.store.submissions import Submissions
from conveyor.producer.submission.publisher import TaskPublisher
from conveyor.shared.background import BackgroundLoop

log = logging.getLogger(__name__)

PURGE_EVERY_S = 60.0


class Maintenance:
    """Runs `sweep_outbox` and `purge_expired` periodically until stopped."""

    def __init__(
        self,
        submissions: Submissions,
        retention: Retention,
        publisher: TaskPublisher,
        *,
        resend_after_s: float,
        result_ttl_s: float,
    ) -> None:
        self._submissions = submissions
        self._retention = retention
        self._publisher = publisher
        self._resend_after_s = resend_after_s
        self._result_ttl_s = result_ttl_s
        self._last_purge = 0.0  # time.monotonic()
        self._upkeep = BackgroundLoop(
            "conveyor-maintenance",
            self._upkeep_round,
            every_s=min(resend_after_s / 2, 10.0),
            wait_first=True,
            logger=log,
        )

    def start(self) -> None:
        self._upkeep.start()

    async def stop(self) -> None:
        await self._upkeep.stop()

    async def sweep_outbox(self) -> int:
        """Publish records the broker never confirmed; how many were sent."""
        stale = await self._submissions.unpublished(time.time() - self._resend_after_s)
        if not stale:
            return 0
        resent = [message.resend() for message in stale]
        await self._publisher.publish_many(resent)
        await self._submissions.mark_published([message.id for message in resent])
        log.warning("published %d task(s) again whose first publish was not confirmed", len(stale))
        return len(stale)

    async def purge_expired(self) -> int:
        """Delete finished records older than the TTL; how many."""
        purged = await self._retention.purge(time.time() - self._result_ttl_s)
        if purged:
            log.info("purged %d finished task record(s) older than %gs", purged, self._result_ttl_s)
        return purged

    async def _upkeep_round(self) -> None:
        await self.sweep_outbox()
        if time.monotonic() - self._last_purge >= PURGE_EVERY_S:
            self._last_purge = time.monotonic()
            await self.purge_expired()
