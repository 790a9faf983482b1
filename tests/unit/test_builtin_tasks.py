"""Built-in tasks, called as the consumer calls them (Task.run) and as plain functions."""

from __future__ import annotations

import pytest

from conveyor.builtin_tasks import (
    CpuPayload,
    EchoPayload,
    FailPayload,
    SendEmailPayload,
    cpu,
    echo,
    fail,
    send_email,
)
from conveyor.shared.errors import NotConfigured, TaskFailed
from conveyor.shared.task_loader import load_tasks
from conveyor.shared.tasks import TaskContext


def _ctx(attempt: int = 1) -> TaskContext:
    return TaskContext("t-1", "x", attempt, "w-1")


async def test_echo_returns_its_payload() -> None:
    assert await echo.run({"a": [1, "b"]}, _ctx()) == {"a": [1, "b"]}
    assert await echo(EchoPayload.model_validate({"a": 1})) == {"a": 1}  # a plain function


async def test_fail_fails_the_first_times_attempts_then_succeeds() -> None:
    payload = FailPayload(message="boom", times=2)
    for attempt in (1, 2):
        with pytest.raises(TaskFailed, match="boom"):
            await fail.run(payload, _ctx(attempt))
    assert await fail.run(payload, _ctx(3)) == {"succeeded_on_attempt": 3}


async def test_fail_without_times_fails_every_attempt() -> None:
    with pytest.raises(TaskFailed):
        await fail.run(FailPayload(), _ctx(50))


def test_cpu_busy_loops_for_the_given_time() -> None:
    result = cpu.run(CpuPayload(ms=30), _ctx())
    assert result["ms"] == 30 and result["iterations"] > 0


async def test_send_email_without_smtp_url_fails_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CONVEYOR_SMTP_URL", raising=False)
    payload = SendEmailPayload(to="a@example.com", subject="s", body="b")
    with pytest.raises(NotConfigured, match="CONVEYOR_SMTP_URL"):
        await send_email.run(payload, _ctx())


def test_the_builtin_module_holds_the_documented_tasks_and_only_cpu_is_sync() -> None:
    tasks = load_tasks(["conveyor.builtin_tasks"])
    assert set(tasks) == {"echo", "sleep", "fail", "cpu", "send_email"}
    assert {name for name, task in tasks.items() if not task.is_async} == {"cpu"}
