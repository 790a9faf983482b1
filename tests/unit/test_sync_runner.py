"""SyncRunner runs sync handlers in real child processes and kills the ones past their limits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from conveyor.consumer.child_process import JSONValue
from conveyor.consumer.sync_runner import SyncRunner
from conveyor.shared.errors import ChildDied, ChildMemoryExceeded, ChildTaskFailed, TaskTimedOut
from conveyor.shared.tasks import TaskContext
from tests.support import wait_until

CTX = TaskContext("t-1", "test", 1, "w-1")
MakeRunner = Callable[..., SyncRunner]


# Handlers run in spawned children, which import them from this module by name.


def add(numbers: list[int], ctx: TaskContext) -> JSONValue:
    return {"sum": sum(numbers), "task_id": ctx.task_id}


def pid_of(payload: None, ctx: TaskContext) -> JSONValue:
    return os.getpid()


def raise_value_error(message: str, ctx: TaskContext) -> JSONValue:
    raise ValueError(message)


class TwoArgError(Exception):
    """Pickles, but cannot be rebuilt: unpickling calls TwoArgError(message)."""

    def __init__(self, left: str, right: str) -> None:
        super().__init__(f"{left}/{right}")


def raise_two_arg_error(payload: None, ctx: TaskContext) -> JSONValue:
    raise TwoArgError("left", "right")


def hang(pid_file: str, ctx: TaskContext) -> JSONValue:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(3600)
    return None


def allocate_then_hang(mb_and_pid_file: tuple[int, str], ctx: TaskContext) -> JSONValue:
    mb, pid_file = mb_and_pid_file
    Path(pid_file).write_text(str(os.getpid()))
    block = b"x" * (mb * 2**20)  # written, so every page is resident
    time.sleep(3600)
    return len(block)


def die(how: str, ctx: TaskContext) -> JSONValue:
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(3600)
    return None


def busy_loop(seconds: float, ctx: TaskContext) -> JSONValue:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass
    return seconds


# Helpers


def alive(pid: int) -> bool:
    """True while `pid` exists, zombies included (a zombie was not reaped)."""
    return Path(f"/proc/{pid}").exists()


async def pid_in(pid_file: Path) -> int:
    await wait_until(
        lambda: pid_file.exists() and pid_file.read_text() != "", 30, "the handler to start"
    )
    return int(pid_file.read_text())


@pytest.fixture
def make_runner() -> Iterator[MakeRunner]:
    """SyncRunner(...) that is closed after the test."""
    runners: list[SyncRunner] = []

    def make(size: int = 1, **options: Any) -> SyncRunner:
        runners.append(SyncRunner(size, **options))
        return runners[-1]

    yield make
    for runner in runners:
        runner.close()


@pytest.fixture(scope="module")
def shared_runner() -> Iterator[SyncRunner]:
    """One pool for the tests that leave its children alone (fresh children cost ~1 s)."""
    runner = SyncRunner(2)
    yield runner
    runner.close()


# Results and errors


async def test_run_returns_the_handlers_result(shared_runner: SyncRunner) -> None:
    assert await shared_runner.run(add, [1, 2, 3], CTX) == {"sum": 6, "task_id": "t-1"}


async def test_run_raises_the_handlers_exception_with_the_childs_traceback(
    shared_runner: SyncRunner,
) -> None:
    with pytest.raises(ValueError) as raised:
        await shared_runner.run(raise_value_error, "bad input", CTX)
    assert str(raised.value) == "bad input"
    notes = "".join(raised.value.__notes__)
    assert "raised in sync child process" in notes and "raise_value_error" in notes


async def test_exception_that_cannot_be_unpickled_comes_back_as_child_task_failed(
    shared_runner: SyncRunner,
) -> None:
    with pytest.raises(ChildTaskFailed) as raised:
        await shared_runner.run(raise_two_arg_error, None, CTX)
    assert str(raised.value) == "TwoArgError: left/right"
    assert raised.value.type_name == "TwoArgError"
    assert "raise_two_arg_error" in raised.value.child_traceback


async def test_time_limit_counts_from_the_handlers_start_not_the_childs(
    make_runner: MakeRunner,
) -> None:
    # A fresh child spends longer than 0.2 s importing before the handler starts.
    assert await make_runner().run(add, [1], CTX, timeout_s=0.2) == {"sum": 1, "task_id": "t-1"}


async def test_tasks_wait_for_a_free_child_and_reuse_it(make_runner: MakeRunner) -> None:
    runner = make_runner(2)
    pids = await asyncio.gather(*(runner.run(pid_of, None, CTX) for _ in range(6)))
    assert len(set(pids)) <= 2
    assert await runner.run(pid_of, None, CTX) in pids


# Kills and replacements


async def test_overrunning_task_times_out_and_its_child_is_killed(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    runner = make_runner()
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(TaskTimedOut) as raised:
        await runner.run(hang, str(pid_file), CTX, timeout_s=0.5)
    assert str(raised.value) == "task ran past its time limit of 0.5s and its process was killed"
    assert time.monotonic() - started < 10
    pid = int(pid_file.read_text())
    assert not alive(pid)
    fresh = await runner.run(pid_of, None, CTX)
    assert fresh != pid


async def test_child_growing_past_the_memory_limit_is_killed(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    runner = make_runner(max_rss_mb=150, rss_check_interval_s=0.05)
    pid_file = tmp_path / "pid"
    with pytest.raises(ChildMemoryExceeded, match="CONVEYOR_MAX_CHILD_RSS_MB=150") as raised:
        await runner.run(allocate_then_hang, (300, str(pid_file)), CTX)
    assert raised.value.rss_mb > 150
    assert not alive(int(pid_file.read_text()))
    assert await runner.run(add, [2], CTX) == {"sum": 2, "task_id": "t-1"}


@pytest.mark.parametrize(
    ("how", "status", "exitcode"),
    [("exit", "exit code 3", 3), ("signal", "killed by SIGTERM", -signal.SIGTERM)],
)
async def test_child_dying_mid_task_raises_child_died_and_is_replaced(
    make_runner: MakeRunner, how: str, status: str, exitcode: int
) -> None:
    runner = make_runner()
    with pytest.raises(ChildDied) as raised:
        await runner.run(die, how, CTX)
    assert str(raised.value) == f"the task's process died mid-task ({status})"
    assert raised.value.exitcode == exitcode
    assert await runner.run(add, [3], CTX) == {"sum": 3, "task_id": "t-1"}


async def test_child_is_recycled_after_max_tasks_per_child(make_runner: MakeRunner) -> None:
    runner = make_runner(max_tasks_per_child=3)
    pids = [await runner.run(pid_of, None, CTX) for _ in range(4)]
    assert pids[0] == pids[1] == pids[2] != pids[3]
    await wait_until(lambda: not alive(pids[0]), 10, "the retired child to exit and be reaped")


async def test_cancelling_a_task_kills_its_child(make_runner: MakeRunner, tmp_path: Path) -> None:
    runner = make_runner()
    pid_file = tmp_path / "pid"
    task = asyncio.create_task(runner.run(hang, str(pid_file), CTX))
    pid = await pid_in(pid_file)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(pid)
    assert await runner.run(pid_of, None, CTX) != pid


async def test_event_loop_keeps_running_while_a_child_busy_loops(make_runner: MakeRunner) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    try:
        assert await make_runner().run(busy_loop, 2.0, CTX) == 2.0
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    elapsed = time.monotonic() - started
    assert ticks >= 0.75 * elapsed / 0.05, f"{ticks} ticks in {elapsed:.2f}s"


async def test_close_kills_running_and_idle_children(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    runner = make_runner(2)
    task = asyncio.create_task(runner.run(hang, str(tmp_path / "pid"), CTX))
    busy_pid = await pid_in(tmp_path / "pid")
    idle_pid = await runner.run(pid_of, None, CTX)  # on a second child, idle from now on
    assert idle_pid != busy_pid
    runner.close()
    assert not alive(idle_pid) and not alive(busy_pid)
    with pytest.raises(ChildDied, match="killed by SIGKILL"):
        await task
    assert await runner.run(add, [4], CTX) == {"sum": 4, "task_id": "t-1"}


# A user's task module and the script that started the consumer


def test_a_user_task_runs_in_a_child_without_rerunning_the_parents_main(tmp_path: Path) -> None:
    """The script has no `if __name__ == "__main__"` guard: spawn would run it again in
    every child (counting twice, or forking forever) unless the parent's `__main__` is hidden."""
    (tmp_path / "user_tasks.py").write_text(
        "import logging, os\nfrom conveyor import task\n"
        "@task\ndef where(n: int) -> dict:\n"
        "    logging.getLogger('user_tasks').info('ran %d', n)\n"
        "    return {'pid': os.getpid(), 'n': n}\n"
    )
    starts = tmp_path / "starts.txt"
    (tmp_path / "script.py").write_text(
        "import asyncio, os\n"
        f"open({str(starts)!r}, 'a').write('started\\n')\n"
        "from conveyor.consumer.sync_runner import SyncRunner\n"
        "from conveyor.shared.tasks import TaskContext\n"
        "from user_tasks import where\n"
        "async def main():\n"
        "    runner = SyncRunner(1, log_setup=('INFO', 'json'))\n"
        "    ctx = TaskContext('task-42', 'where', 1, 'w-1', 'req-9')\n"
        "    try:\n"
        "        result = await runner.run(where.run, {'n': 7}, ctx, 30)\n"
        "    finally:\n"
        "        runner.close()\n"
        "    assert result['pid'] != os.getpid() and result['n'] == 7, result\n"
        "asyncio.run(main())\n"
    )
    run = subprocess.run(
        [sys.executable, "script.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert starts.read_text() == "started\n"  # the script ran once: not again in the child
    [line] = [line for line in run.stderr.splitlines() if '"ran 7"' in line]
    fields = orjson.loads(line)
    assert (fields["task_id"], fields["request_id"], fields["worker"]) == (
        "task-42",
        "req-9",
        "w-1",
    )
