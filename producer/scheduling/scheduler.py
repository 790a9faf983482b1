"""The scheduler: on the leader replica, fires each schedule's due ticks as tasks.

Each round reads the schedules that are not paused, fires the ticks due since each one's
`last_tick_at` (missed ones per its misfire policy), moves `last_tick_at` forward, and sleeps
until the next tick (at most a second, so new schedules are noticed within one).

A tick is fired before `last_tick_at` moves, so a leader dying in between leaves the tick to
its successor, which fires it again: harmless, because every tick's task has a
deterministic id and idempotency key (`schedule:{name}:{tick}`), which the store records
once however many leaders race.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from conveyor.producer.scheduling.leader import LeaderStatus
from conveyor.producer.scheduling.schedules import (
    ON_TIME_GRACE_S,
    Schedule,
    ScheduleDefinition,
    ScheduleFields,
    due_ticks,
    next_runs,
    tick_key,
    ticks_to_fire,
)
from conveyor.producer.scheduling.store import ScheduleStore
from conveyor.producer.submission.submitter import Submitter, TaskSubmission
from conveyor.shared.background import BackgroundLoop
from conveyor.shared.errors import SubmissionError
from conveyor.shared.ids import tick_task_id

log = logging.getLogger(__name__)

MAX_SLEEP_S = 1.0
# Wake this much after a tick, so that the tick is in the past when the round looks.
WAKE_SLACK_S = 0.01
# What a schedule says of the task it fires: the fields it shares with a TaskSubmission.
SUBMISSION_FIELDS = frozenset({"task", "payload", "queue", "max_retries", "timeout_s"})


class Scheduler:
    """Fires due ticks while this replica leads; idle otherwise."""

    def __init__(
        self,
        store: ScheduleStore,
        submitter: Submitter,
        leadership: LeaderStatus,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._submitter = submitter
        self._leadership = leadership
        self._clock = clock
        # A failed round is tried again after MAX_SLEEP_S.
        self._rounds = BackgroundLoop(
            "conveyor-scheduler", self._round_when_leading, every_s=MAX_SLEEP_S, logger=log
        )
        self.fired = 0

    def start(self) -> None:
        self._rounds.start()

    async def stop(self) -> None:
        await self._rounds.stop()

    async def _round_when_leading(self) -> float:
        """Wait to lead, run a round; how long until the next tick (at most MAX_SLEEP_S)."""
        await self._leadership.wait_leading()
        wake_at = await self.run_round()
        delay_s = MAX_SLEEP_S if wake_at is None else wake_at - self._clock() + WAKE_SLACK_S
        return min(max(delay_s, WAKE_SLACK_S), MAX_SLEEP_S)

    async def run_round(self) -> float | None:
        """Fire what is due now; when the next tick of any schedule is (None: no schedule)."""
        now = self._clock()
        wake_at: float | None = None
        for schedule in await self._store.active():
            if not self._leadership.leading:
                return None
            try:
                await self.fire_due(schedule, now)
            except Exception as error:
                # Broker or database trouble: the ticks stay due and are tried next round.
                log.warning("schedule %s: could not fire its due ticks: %r", schedule.name, error)
            upcoming = next_runs(schedule.cron, schedule.timezone, now, 1)[0]
            wake_at = upcoming if wake_at is None else min(wake_at, upcoming)
        return wake_at

    async def fire_due(self, schedule: Schedule, now_s: float) -> int:
        """Fire the due ticks of `schedule` per its misfire policy; how many tasks were new."""
        due = due_ticks(schedule.cron, schedule.timezone, schedule.ticks_after, now_s)
        if not due:
            return 0
        ticks = ticks_to_fire(due, now_s, schedule.misfire)
        missed = sum(1 for tick in due if tick < now_s - ON_TIME_GRACE_S)
        if missed:
            log.info(
                "schedule %s: %d tick(s) missed while no replica led; firing %d late (misfire %s)",
                schedule.name,
                missed,
                missed - (len(due) - len(ticks)),
                schedule.misfire,
            )
        created = 0
        try:
            created = await fire_ticks(self._submitter, schedule, ticks)
        except SubmissionError as error:
            # The schedule no longer fits the catalog (a task or queue was removed): its
            # ticks can never be fired, so they are skipped, loudly.
            log.error("schedule %s: tick(s) not fired: %s", schedule.name, error.message)
        await self._store.advance(schedule.name, due[-1])
        self.fired += created
        return created


def task_submission(
    schedule: ScheduleDefinition | ScheduleFields, idempotency_key: str | None = None
) -> TaskSubmission:
    """The task a schedule fires: its task, payload and overrides. The API checks a
    definition with it before storing it, so a stored schedule's ticks pass the same checks."""
    fields = schedule.model_dump(include=set(SUBMISSION_FIELDS))
    return TaskSubmission(**fields, idempotency_key=idempotency_key)


async def fire_ticks(submitter: Submitter, schedule: Schedule, ticks: Sequence[float]) -> int:
    """Record and publish one task per tick, each with the tick's id and idempotency key;
    how many were new (a tick some leader fired already is not enqueued again)."""
    if not ticks:
        return 0
    submissions = [task_submission(schedule, tick_key(schedule.name, tick)) for tick in ticks]
    outcome = await submitter.accept(
        submissions,
        request_id=f"schedule:{schedule.name}",
        field_prefix="",
        task_ids=[tick_task_id(schedule.name, tick) for tick in ticks],
    )
    created = sum(1 for _, new in outcome if new)
    log.debug("schedule %s: fired %d task(s)", schedule.name, created)
    return created
