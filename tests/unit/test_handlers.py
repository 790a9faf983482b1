"""Built-in handlers, called directly."""

from __future__ import annotations

import pytest

from conveyor.consumer.handlers import TaskContext, builtin_handlers, cpu, echo, fail
from conveyor.shared.builtin_tasks import CpuPayload, EchoPayload, FailPayload, SendEmailPayload
from conveyor.shared.errors import NotConfigured, TaskFailed


def _ctx(attempt: int = 1) -> TaskContext:
    return TaskContext("t-1", "x", attempt, "w-1")


async def test_echo_returns_its_payload() -> None:
    assert await echo(EchoPayload.model_validate({"a": [1, "b"]}), _ctx()) == {"a": [1, "b"]}


async def test_fail_fails_the_first_times_attempts_then_succeeds() -> None:
    payload = FailPayload(message="boom", times=2)
    for attempt in (1, 2):
        with pytest.raises(TaskFailed, match="boom"):
            await fail(payload, _ctx(attempt))
    assert await fail(payload, _ctx(3)) == {"succeeded_on_attempt": 3}


async def test_fail_without_times_fails_every_attempt() -> None:
    with pytest.raises(TaskFailed):
        await fail(FailPayload(), _ctx(50))


def test_cpu_busy_loops_for_the_given_time() -> None:
    result = cpu(CpuPayload(ms=30), _ctx())
    assert result["ms"] == 30 and result["iterations"] > 0


async def test_send_email_without_smtp_url_fails_naming_the_setting() -> None:
    handler = builtin_handlers(smtp_url=None)["send_email"]
    payload = SendEmailPayload(to="a@example.com", subject="s", body="b")
    with pytest.raises(NotConfigured, match="CONVEYOR_SMTP_URL"):
        await handler.fn(payload, _ctx())


def test_sync_handlers_are_marked_to_run_off_the_loop() -> None:
    handlers = builtin_handlers()
    assert {name for name, h in handlers.items() if h.sync} == {"cpu"}
