"""Group commit: concurrent single submissions share one store transaction and one confirm window.

One transaction and one publish-and-confirm per submission made 256 concurrent `submit` calls
barely faster than serial ones (each waited for a pooled connection and three round trips).
Here every submission joins a queue; one flusher task takes everything waiting, records it in
one transaction, then publishes it with pipelined confirms while it records the next group.
A lone submission never waits for company: the flusher starts the moment something is
waiting, and a group is whatever arrived while the previous one was being written.

The guarantees are those of a single submission: the record is written before the publish,
each caller returns once its own task is confirmed, and errors stay per submission (a refused
or unconfirmed publish fails only its own caller; a group the store refuses is retried one
submission at a time, so one bad row cannot fail the rest).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from conveyor.producer.store.submissions import NewTask
from conveyor.shared.envelope import TaskMessage
from conveyor.shared.records import TaskRecord

log = logging.getLogger(__name__)

# The HTTP batch limit: a group is one multi-row INSERT and one publish_all.
MAX_GROUP = 1000
# Groups publishing at once while the next is recorded. Confirms outstanding stay bounded by
# the callers waiting (one task each); more groups in flight keep the broker's pipeline full
# while a group's last confirms come in.
MAX_PUBLISHING = 4

Outcome = tuple[TaskRecord, bool]
Record = Callable[[Sequence[NewTask]], Awaitable[list[Outcome]]]
Publish = Callable[[list[TaskMessage]], Awaitable[list[Exception | None]]]


@dataclass(eq=False, slots=True)
class _Waiting:
    """One caller's submission, and the future its caller awaits."""

    entry: NewTask
    done: asyncio.Future[Outcome]
    # Later members of the group with the same idempotency key: they get this one's outcome.
    followers: list[_Waiting] = field(default_factory=list)


@dataclass(slots=True)
class _Recorded:
    """A recorded group: who still waits for a publish (with their records)."""

    fresh: list[tuple[_Waiting, TaskRecord]]


class GroupCommit:
    """`submit(entry)` returns what `record` gave for it, once `publish` confirmed it."""

    def __init__(self, record: Record, publish: Publish, max_group: int = MAX_GROUP) -> None:
        self._record = record
        self._publish = publish
        self._max_group = max_group
        self._waiting: deque[_Waiting] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._publishing: set[asyncio.Task[None]] = set()

    async def submit(self, entry: NewTask) -> Outcome:
        """Record and publish `entry` with whatever else is waiting.

        A caller cancelled before its group was taken is dropped (nothing recorded); one
        cancelled later leaves its task to the group, which records, publishes and marks it
        as if the caller were still there.
        """
        item = _Waiting(entry, asyncio.get_running_loop().create_future())
        self._waiting.append(item)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="conveyor-group-commit")
        return await item.done

    async def _flush(self) -> None:
        """Record group after group, each in one transaction, and start its publish at once:
        up to MAX_PUBLISHING groups publish while the next is recorded.

        Returns when nothing waits, with no await between that check and the return: a
        submission arriving meanwhile finds the flusher running and is taken by it, or finds
        it done and starts a new one. Publishes run on without it.
        """
        group: list[_Waiting] = []
        try:
            while group := self._take():
                recorded = await self._record_group(group)
                group = []
                if len(self._publishing) >= MAX_PUBLISHING:
                    await asyncio.wait(self._publishing, return_when=asyncio.FIRST_COMPLETED)
                publishing = asyncio.create_task(self._publish_group(recorded))
                self._publishing.add(publishing)
                publishing.add_done_callback(self._publishing.discard)
        except BaseException as error:
            # Only a cancelled flusher (the loop shutting down) gets here: nobody is left
            # waiting forever.
            for item in (*group, *self._waiting):
                if isinstance(error, asyncio.CancelledError):
                    item.done.cancel()
                else:
                    _fail(item, error)
            self._waiting.clear()
            raise

    def _take(self) -> list[_Waiting]:
        group: list[_Waiting] = []
        while self._waiting and len(group) < self._max_group:
            item = self._waiting.popleft()
            if not item.done.done():  # not cancelled while it waited
                group.append(item)
        return group

    async def _record_group(self, group: list[_Waiting]) -> _Recorded:
        """Record the group in one transaction; resolve whoever needs no publish."""
        try:
            outcomes = await self._record([item.entry for item in group])
        except Exception as error:
            if len(group) == 1:
                _fail(group[0], error)
                return _Recorded([])
            log.info("recording %d submissions together failed (%r): one by one", len(group), error)
            return await self._record_one_by_one(group)
        return self._sort(group, outcomes)

    async def _record_one_by_one(self, group: list[_Waiting]) -> _Recorded:
        """Each submission alone, so a row the store refuses fails only its own caller."""
        fresh: list[tuple[_Waiting, TaskRecord]] = []
        for item in group:
            try:
                [outcome] = await self._record([item.entry])
            except Exception as error:
                _fail(item, error)
            else:
                fresh += self._sort([item], [outcome]).fresh
        return _Recorded(fresh)

    def _sort(self, group: list[_Waiting], outcomes: list[Outcome]) -> _Recorded:
        """Who waits for a publish (new, due now), who gets a record now (a known
        idempotency key, a delayed task), who waits for a twin in the group (same key)."""
        fresh: list[tuple[_Waiting, TaskRecord]] = []
        by_id: dict[str, _Waiting] = {}
        for item, (record, created) in zip(group, outcomes, strict=True):
            if created and item.entry.due_at is None:
                fresh.append((item, record))
                by_id[record.id] = item
            elif not created and record.id in by_id:
                by_id[record.id].followers.append(item)
            elif not item.done.done():
                item.done.set_result((record, created))
        return _Recorded(fresh)

    async def _publish_group(self, recorded: _Recorded) -> None:
        """Publish the group's new tasks; each caller gets its own task's outcome."""
        if not recorded.fresh:
            return
        errors: list[Exception | None]
        try:
            errors = await self._publish([item.entry.message for item, _ in recorded.fresh])
        except Exception as failure:
            errors = [failure] * len(recorded.fresh)
        for (item, record), error in zip(recorded.fresh, errors, strict=True):
            if error is None:
                _resolve(item, (record, True))
                for follower in item.followers:
                    _resolve(follower, (record, False))
            else:
                for waiting in (item, *item.followers):
                    _fail(waiting, error)


def _resolve(item: _Waiting, outcome: Outcome) -> None:
    if not item.done.done():
        item.done.set_result(outcome)


def _fail(item: _Waiting, error: BaseException) -> None:
    if not item.done.done():
        item.done.set_exception(error)
