"""A consumer's run check keeps asking while its channel is being restored: redeliveries
come right after a broker node died, which is when that channel is closed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aio_pika.exceptions import ChannelInvalidStateError

from conveyor.consumer.checks import RunCheck
from conveyor.shared.topology import Topology
from conveyor.shared.wire import RunCheckReply


class FakeChannel:
    closed = False

    async def close(self) -> None:
        self.closed = True


class FlakyRpc:
    """Refuses the first `failures` calls as a closed channel does, then answers `reply`."""

    def __init__(self, failures: int, reply: RunCheckReply | None) -> None:
        self.failures = failures
        self.reply = reply
        self.calls = 0
        self.channel = FakeChannel()
        self.abandoned = False

    def abandon(self) -> None:
        self.abandoned = True

    async def call(self, _key: str, _body: bytes, decode: Callable[[bytes], Any], **_: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise ChannelInvalidStateError("closed")
        if self.reply is None:
            raise TimeoutError
        return decode(self.reply.encode())


def _check(rpc: FlakyRpc, timeout_s: float) -> RunCheck:
    check = RunCheck(None, Topology("ns"), timeout_s=timeout_s)  # type: ignore[arg-type]
    check._rpc = rpc  # type: ignore[assignment]
    return check


async def test_a_question_the_closed_channel_refused_is_asked_again_and_answered() -> None:
    rpc = FlakyRpc(failures=3, reply=RunCheckReply("t1", run=False, status="succeeded"))
    verdict = await _check(rpc, timeout_s=5).verdict("t1", redelivered=True)
    assert (verdict.run, verdict.finished_as, rpc.calls) == (False, "succeeded", 4)


async def test_a_channel_that_never_comes_back_means_run_it_when_the_time_is_up() -> None:
    rpc = FlakyRpc(failures=1_000, reply=None)
    verdict = await _check(rpc, timeout_s=0.3).verdict("t1", redelivered=True)
    assert verdict.run is True
    assert 2 <= rpc.calls <= 3  # one try per 0.25 s pause within 2 x 0.3 s


async def test_a_call_that_fails_at_once_is_not_retried_in_a_busy_loop() -> None:
    rpc = FlakyRpc(failures=0, reply=None)  # TimeoutError at once, as abandon() gives
    verdict = await _check(rpc, timeout_s=0.2).verdict("t1", redelivered=True)
    assert verdict.run is True and 1 <= rpc.calls <= 2


class FakeConnection:
    async def channel(self, **_: Any) -> FakeChannel:
        return FakeChannel()


async def test_after_a_question_went_unanswered_the_next_one_goes_out_on_a_fresh_channel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The restored channel takes questions but never hears a reply; a fresh one does.
    deaf = FlakyRpc(failures=0, reply=None)
    fresh = FlakyRpc(failures=0, reply=RunCheckReply("t1", run=False, status="succeeded"))

    async def open_fresh(_channel: object) -> FlakyRpc:
        return fresh

    monkeypatch.setattr("conveyor.consumer.checks.RpcClient.open", open_fresh)
    check = RunCheck(FakeConnection(), Topology("ns"), timeout_s=5)  # type: ignore[arg-type]
    check._rpc = deaf  # type: ignore[assignment]
    verdict = await check.verdict("t1", redelivered=True)
    assert (verdict.run, verdict.finished_as) == (False, "succeeded")
    assert (deaf.calls, fresh.calls) == (1, 1)
    assert deaf.abandoned and deaf.channel.closed
