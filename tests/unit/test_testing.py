"""conveyor.testing.InMemoryConveyor: the services' validation, records and retry rules,
without a broker or a database."""

from __future__ import annotations

import pytest

from conveyor import InvalidRequest, TaskNotFound, TaskStatus
from conveyor.builtin_tasks import fail, sleep
from conveyor.testing import InMemoryConveyor


async def test_a_task_runs_on_drain_and_its_record_holds_the_result() -> None:
    async with InMemoryConveyor(tasks=["conveyor.builtin_tasks"]) as conveyor:
        record = await conveyor.submit("echo", {"n": 1})
        assert record.status == TaskStatus.QUEUED and record.max_retries == 3
        assert await conveyor.drain() == 1
        done = await conveyor.get(record.id)
    assert (done.status, done.result, done.attempts) == (TaskStatus.SUCCEEDED, {"n": 1}, 1)


async def test_retries_follow_max_retries_then_the_task_fails_with_its_error() -> None:
    async with InMemoryConveyor(tasks=["conveyor.builtin_tasks"], max_retries=2) as conveyor:
        flaky = await conveyor.submit(fail, times=2)
        hopeless = await conveyor.submit("fail", {"message": "never"})
        permanent = await conveyor.submit(fail, permanent=True)
        asked = await conveyor.submit("fail", {"times": 1, "retry_after_s": 60})
        await conveyor.drain()
        flaky, hopeless, permanent, asked = [
            await conveyor.get(r.id) for r in (flaky, hopeless, permanent, asked)
        ]
    assert (flaky.status, flaky.attempts) == (TaskStatus.SUCCEEDED, 3)
    assert (hopeless.status, hopeless.attempts) == (TaskStatus.FAILED, 3)
    assert hopeless.error is not None and hopeless.error.message == "never"
    assert (permanent.status, permanent.attempts) == (TaskStatus.FAILED, 1)
    assert (asked.status, asked.attempts) == (TaskStatus.SUCCEEDED, 2)  # delay fast-forwarded


async def test_bad_submissions_raise_the_clients_422_error_naming_the_field() -> None:
    async with InMemoryConveyor(tasks=["conveyor.builtin_tasks"]) as conveyor:
        cases = [
            (("sleep", {"seconds": "long"}), "payload.seconds"),
            (("nope", {}), "task"),
            (("echo", {}), "queue"),
        ]
        for (name, payload), field in cases:
            with pytest.raises(InvalidRequest) as refused:
                await conveyor.submit(
                    name, payload, queue="elsewhere" if field == "queue" else None
                )
            assert refused.value.status == 422 and refused.value.details[0].field == field
        with pytest.raises(InvalidRequest, match=r"payload\.seconds"):
            await conveyor.submit(sleep, seconds=-1)
        with pytest.raises(TaskNotFound):
            await conveyor.get("no-such-id")


async def test_time_limits_delays_and_idempotency_keys_behave_as_in_the_services() -> None:
    async with InMemoryConveyor(tasks=["conveyor.builtin_tasks"]) as conveyor:
        slow = await conveyor.submit(sleep, seconds=5, timeout_s=0.05, max_retries=0)
        later = await conveyor.submit("echo", {"x": 1}, delay_s=3600)
        assert later.status == TaskStatus.SCHEDULED and later.eta is not None
        again = await conveyor.submit("echo", {"x": 1}, delay_s=3600, idempotency_key="k")
        assert (await conveyor.submit("echo", {}, idempotency_key="k")).id == again.id
        await conveyor.drain()
        slow, later = await conveyor.get(slow.id), await conveyor.get(later.id)
    assert slow.status == TaskStatus.FAILED and slow.error is not None
    assert slow.error.type == "TaskTimedOut"
    assert later.status == TaskStatus.SUCCEEDED


async def test_it_reads_no_conveyor_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test suite's environment may point at servers that are not there, or be invalid."""
    for name, value in {
        "CONVEYOR_AMQP_URL": "amqp://nobody:secret@10.255.255.1:1/",
        "CONVEYOR_DATABASE_URL": "not a url",
        "CONVEYOR_TASKS": "no_such_module",
        "CONVEYOR_DEFAULT_MAX_RETRIES": "zero",
    }.items():
        monkeypatch.setenv(name, value)
    async with InMemoryConveyor(tasks=["conveyor.builtin_tasks"]) as conveyor:
        record = await conveyor.submit("echo", {"ok": True})
        await conveyor.drain()
        assert (await conveyor.get(record.id)).result == {"ok": True}
