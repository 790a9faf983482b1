"""BackgroundLoop: steps on a rhythm, errors logged by name without ending the loop, wake-ups
that are never lost, and a stop that waits for the running step."""

from __future__ import annotations

import asyncio
import logging

import pytest

from conveyor.shared.background import BackgroundLoop, InFlight

DEADLINE_S = 5.0


class Steps:
    """A fake step: counts its calls and sets `reached` once it made `until` of them."""

    def __init__(self, until: int = 1, fail: int = 0, wait_s: float | None = None) -> None:
        self.calls = 0
        self.until = until
        self.fail = fail  # raise on this many first calls
        self.wait_s = wait_s
        self.reached = asyncio.Event()
        self.failed = asyncio.Event()

    async def __call__(self) -> float | None:
        self.calls += 1
        if self.calls >= self.until:
            self.reached.set()
        if self.calls <= self.fail:
            self.failed.set()
            raise ConnectionError(f"call {self.calls} failed")
        return self.wait_s


async def _reached(steps: Steps) -> None:
    async with asyncio.timeout(DEADLINE_S):
        await steps.reached.wait()


async def _failed_once(loop: BackgroundLoop, steps: Steps) -> None:
    """Start `loop` and return once its first step failed (the loop is backing off)."""
    loop.start()
    async with asyncio.timeout(DEADLINE_S):
        await steps.failed.wait()


async def test_steps_repeat_every_interval_until_stopped() -> None:
    steps = Steps(until=3)
    loop = BackgroundLoop("test-ticks", steps, every_s=0.01)
    loop.start()
    assert loop.running
    await _reached(steps)
    await loop.stop()
    calls = steps.calls
    assert calls >= 3
    assert not loop.running
    for _ in range(5):
        await asyncio.sleep(0)  # loop turns, not a wait: a stopped loop takes no step
    assert steps.calls == calls


async def test_the_wait_a_step_returns_replaces_the_interval() -> None:
    steps = Steps(until=3, wait_s=0.0)  # back to back, though every_s is an hour
    loop = BackgroundLoop("test-returned-wait", steps, every_s=3600)
    loop.start()
    await _reached(steps)
    await loop.stop()
    assert steps.calls >= 3


async def test_a_failing_step_is_logged_with_the_loop_name_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    steps = Steps(until=3, fail=2)
    loop = BackgroundLoop("test-failing", steps, every_s=0.01)
    with caplog.at_level(logging.WARNING, logger="conveyor.shared.background"):
        loop.start()
        await _reached(steps)
        await loop.stop()
    failures = [r.getMessage() for r in caplog.records if r.name == "conveyor.shared.background"]
    assert len(failures) == 2
    assert all(message.startswith("test-failing failed") for message in failures)
    assert "call 1 failed" in failures[0]
    assert "call 2 failed" in failures[1]


async def test_a_failing_step_logs_on_the_owner_logger() -> None:
    owner = logging.getLogger("conveyor.test.owner")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    owner.addHandler(handler)
    try:
        steps = Steps(until=2, fail=1)
        loop = BackgroundLoop("test-owner", steps, every_s=0.01, logger=owner)
        loop.start()
        await _reached(steps)
        await loop.stop()
    finally:
        owner.removeHandler(handler)
    assert [r.levelno for r in records] == [logging.WARNING]


async def test_retry_s_backs_off_after_a_failure_even_when_woken() -> None:
    steps = Steps(until=2, fail=1)
    loop = BackgroundLoop("test-retry", steps, every_s=None, retry_s=3600)
    await _failed_once(loop, steps)
    loop.wake()
    for _ in range(20):
        await asyncio.sleep(0)
    assert steps.calls == 1  # still backing off: wake() does not cut the retry delay
    await loop.stop()


async def test_wait_first_waits_for_a_wake_up_before_the_first_step() -> None:
    steps = Steps(until=1)
    loop = BackgroundLoop("test-wake", steps, every_s=None, wait_first=True)
    loop.start()
    for _ in range(20):
        await asyncio.sleep(0)
    assert steps.calls == 0
    loop.wake()
    await _reached(steps)
    await loop.stop()
    assert steps.calls == 1


async def test_a_wake_up_during_a_step_ends_the_next_wait() -> None:
    calls = 0
    second = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            loop.wake()  # arrives while the step runs: not lost
        else:
            second.set()

    loop = BackgroundLoop("test-wake-during-step", step, every_s=3600)
    loop.start()
    async with asyncio.timeout(DEADLINE_S):
        await second.wait()
    await loop.stop()
    assert calls == 2


async def test_stop_waits_for_the_running_step_and_is_idempotent() -> None:
    entered = asyncio.Event()
    cleaned_up = False

    async def step() -> None:
        nonlocal cleaned_up
        entered.set()
        try:
            await asyncio.Event().wait()  # a step that never finishes by itself
        finally:
            cleaned_up = True

    loop = BackgroundLoop("test-stop", step, every_s=1.0)
    loop.start()
    async with asyncio.timeout(DEADLINE_S):
        await entered.wait()
    await loop.stop()
    assert cleaned_up
    assert not loop.running
    await loop.stop()
    await asyncio.gather(loop.stop(), loop.stop())


async def test_stop_without_start_does_nothing_and_start_twice_runs_one_task() -> None:
    steps = Steps(until=1)
    loop = BackgroundLoop("test-once", steps, every_s=None)
    await loop.stop()
    loop.start()
    loop.start()
    await _reached(steps)
    named = [task for task in asyncio.all_tasks() if task.get_name() == "test-once"]
    assert len(named) == 1
    await loop.stop()
    assert steps.calls == 1


async def test_wake_ups_before_a_step_are_served_by_it_after_a_back_off() -> None:
    steps = Steps(until=2, fail=1)
    loop = BackgroundLoop("test-served", steps, every_s=None, retry_s=0.01)
    await _failed_once(loop, steps)
    loop.wake()  # during the back-off: the step after it serves this wake-up
    await _reached(steps)
    for _ in range(20):
        await asyncio.sleep(0)
    assert steps.calls == 2  # no third step: nothing woke the loop after the second began
    await loop.stop()


async def test_in_flight_cancel_ends_the_calls_under_way_and_only_those() -> None:
    in_flight = InFlight()
    started: list[int] = []
    ended: list[tuple[int, str]] = []
    release = asyncio.Event()

    async def handle(n: int) -> None:
        started.append(n)
        try:
            if n:
                await release.wait()  # like a handler awaiting the database
        except asyncio.CancelledError:
            ended.append((n, "cancelled"))
            raise
        ended.append((n, "done"))

    handle_tracked = in_flight.track(handle)
    await handle_tracked(0)  # finished before the stop: nothing to cancel
    calls = [asyncio.create_task(handle_tracked(n)) for n in (1, 2)]
    async with asyncio.timeout(DEADLINE_S):
        while len(started) < 3:
            await asyncio.sleep(0)
    await in_flight.cancel()
    assert all(call.cancelled() for call in calls)
    assert sorted(ended) == [(0, "done"), (1, "cancelled"), (2, "cancelled")]
    await in_flight.cancel()  # again: nothing left


async def test_in_flight_stop_closes_the_channel_before_it_cancels_the_calls() -> None:
    in_flight = InFlight()
    order: list[str] = []

    class Channel:
        async def close(self) -> None:
            order.append("channel closed")

    async def handle(_: int) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            order.append("call cancelled")
            raise

    call = asyncio.create_task(in_flight.track(handle)(1))
    await asyncio.sleep(0)
    await in_flight.stop(Channel())  # type: ignore[arg-type]
    assert call.cancelled() and order == ["channel closed", "call cancelled"]
    await in_flight.stop(None)  # no channel, nothing under way: nothing to do
