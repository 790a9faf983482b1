"""Group commit: concurrent single submissions share a transaction and a publish, errors stay
per submission."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from conveyor.producer.store.submissions import NewTask
from conveyor.producer.submission.group_commit import GroupCommit, Outcome
from conveyor.shared.envelope import TaskMessage
from conveyor.shared.errors import PublishFailed, PublishUnconfirmed
from conveyor.shared.ids import new_task_id
from conveyor.shared.records import TaskRecord, TaskStatus


def entry(n: int, key: str | None = None, due_at: float | None = None) -> NewTask:
    message = TaskMessage(id=new_task_id(), task="echo", queue="default", payload={"n": n})
    return NewTask(message, 3, 300.0, idempotency_key=key, due_at=due_at)


def record_of(task: NewTask) -> TaskRecord:
    message = task.message
    return TaskRecord(
        id=message.id,
        task=message.task,
        queue=message.queue,
        status=TaskStatus.QUEUED,
        payload=message.payload,
        attempts=0,
        max_retries=task.max_retries,
        timeout_s=task.timeout_s,
        idempotency_key=task.idempotency_key,
        created_at=datetime.now(UTC),
    )


class FakeStore:
    """Records groups like Submissions.add: a key seen before (or twice) gives the first record."""

    def __init__(self) -> None:
        self.groups: list[list[NewTask]] = []
        self.by_key: dict[str, TaskRecord] = {}
        self.refuse_n: int | None = None  # a payload the "database" rejects

    async def add(self, entries: Sequence[NewTask]) -> list[Outcome]:
        if any(e.message.payload["n"] == self.refuse_n for e in entries):
            raise ValueError("the database refused a row")
        self.groups.append(list(entries))
        outcome: list[Outcome] = []
        for task in entries:
            key = task.idempotency_key
            if key is not None and key in self.by_key:
                outcome.append((self.by_key[key], False))
                continue
            record = record_of(task)
            if key is not None:
                self.by_key[key] = record
            outcome.append((record, True))
        return outcome


class FakePublish:
    """Publishes groups; fails the tasks it is told to, per task."""

    def __init__(self) -> None:
        self.groups: list[list[TaskMessage]] = []
        self.failures: dict[int, Exception] = {}  # by payload "n"

    async def __call__(self, messages: list[TaskMessage]) -> list[Exception | None]:
        self.groups.append(messages)
        return [self.failures.get(m.payload["n"]) for m in messages]


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def publish() -> FakePublish:
    return FakePublish()


@pytest.fixture
def group(store: FakeStore, publish: FakePublish) -> GroupCommit:
    return GroupCommit(store.add, publish)


async def test_concurrent_submissions_share_one_transaction_and_one_publish(
    group: GroupCommit, store: FakeStore, publish: FakePublish
) -> None:
    entries = [entry(n) for n in range(50)]
    outcomes = await asyncio.gather(*(group.submit(e) for e in entries))
    assert [record.id for record, _ in outcomes] == [e.message.id for e in entries]
    assert all(created for _, created in outcomes)
    assert len(store.groups) == 1 and len(store.groups[0]) == 50
    assert len(publish.groups) == 1 and len(publish.groups[0]) == 50


async def test_a_lone_submission_is_recorded_and_published_alone(
    group: GroupCommit, store: FakeStore, publish: FakePublish
) -> None:
    for n in range(3):
        record, created = await group.submit(entry(n))
        assert created and record.payload == {"n": n}
    assert [len(g) for g in store.groups] == [1, 1, 1]
    assert [len(g) for g in publish.groups] == [1, 1, 1]


async def test_a_refused_publish_fails_only_its_own_submission(
    group: GroupCommit, publish: FakePublish
) -> None:
    publish.failures = {
        3: PublishFailed("t3", "nacked by the broker"),
        5: PublishUnconfirmed("t5", "no confirm within 5s"),
    }
    outcomes = await asyncio.gather(
        *(group.submit(entry(n)) for n in range(8)), return_exceptions=True
    )
    assert isinstance(outcomes[3], PublishFailed) and not isinstance(
        outcomes[3], PublishUnconfirmed
    )
    assert isinstance(outcomes[5], PublishUnconfirmed)
    assert all(not isinstance(o, BaseException) for i, o in enumerate(outcomes) if i not in (3, 5))


async def test_a_row_the_store_refuses_fails_only_its_own_submission(
    group: GroupCommit, store: FakeStore, publish: FakePublish
) -> None:
    store.refuse_n = 2
    outcomes = await asyncio.gather(
        *(group.submit(entry(n)) for n in range(5)), return_exceptions=True
    )
    assert isinstance(outcomes[2], ValueError)
    assert sum(1 for o in outcomes if not isinstance(o, BaseException)) == 4
    assert sorted(m.payload["n"] for g in publish.groups for m in g) == [0, 1, 3, 4]


async def test_duplicate_keys_in_one_group_make_one_task(
    group: GroupCommit, store: FakeStore, publish: FakePublish
) -> None:
    outcomes = await asyncio.gather(*(group.submit(entry(n, key="same")) for n in range(10)))
    assert len({record.id for record, _ in outcomes}) == 1
    assert sorted(created for _, created in outcomes) == [False] * 9 + [True]
    assert sum(len(g) for g in publish.groups) == 1


async def test_duplicates_of_a_refused_task_get_its_error(
    group: GroupCommit, publish: FakePublish
) -> None:
    publish.failures = {0: PublishFailed("t0", "nacked by the broker")}
    outcomes = await asyncio.gather(
        *(group.submit(entry(n % 1, key="k")) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, PublishFailed) for o in outcomes)


async def test_delayed_and_known_tasks_are_not_published(
    group: GroupCommit, publish: FakePublish
) -> None:
    await group.submit(entry(0, key="known"))
    known, created = await group.submit(entry(1, key="known"))
    assert known.payload == {"n": 0}
    assert not created
    delayed, created = await group.submit(entry(2, due_at=4e9))
    assert delayed.payload == {"n": 2}
    assert created
    assert [m.payload["n"] for g in publish.groups for m in g] == [0]


async def test_a_submission_cancelled_before_its_group_is_not_recorded(
    group: GroupCommit, store: FakeStore
) -> None:
    first = asyncio.create_task(group.submit(entry(0)))
    second = asyncio.create_task(group.submit(entry(1)))
    await asyncio.sleep(0)  # both wait in the queue; the flusher has not run yet
    second.cancel()
    await first
    with pytest.raises(asyncio.CancelledError):
        await second
    assert [e.message.payload["n"] for g in store.groups for e in g] == [0]


async def test_a_cancelled_flusher_leaves_nobody_waiting() -> None:
    started = asyncio.Event()

    async def record_forever(entries: Sequence[NewTask]) -> list[Outcome]:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    group = GroupCommit(record_forever, FakePublish())
    waiting = [asyncio.create_task(group.submit(entry(n))) for n in range(3)]
    await started.wait()
    late = asyncio.create_task(group.submit(entry(9)))
    await asyncio.sleep(0)
    assert group._flusher is not None
    group._flusher.cancel()
    outcomes = await asyncio.gather(*waiting, late, return_exceptions=True)
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
