"""One child process that runs sync handlers, one task at a time, and can be killed alone.

The parent talks to it over a pipe and waits for it with `loop.add_reader` on the pipe and on
the process sentinel, so the event loop (and the AMQP heartbeats it answers) never blocks on a
child. Children start with `spawn`: forking a process that runs an event loop and sockets is
unsafe. A child gets each task by reference (module and name: see `Task.__reduce__`), so it
imports the user's task module itself; the parent's `__main__` is hidden from it, so nothing
of the script that started the consumer runs again in a child.
"""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import pickle
import signal
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import SpawnContext
from typing import Any

from conveyor.shared.errors import ChildDied, ChildMemoryExceeded, ChildTaskFailed, TaskTimedOut
from conveyor.shared.logs import configure_logging, log_context
from conveyor.shared.tasks import TaskContext

JSONValue = Any  # whatever orjson can serialize
SyncHandlerFn = Callable[[Any, TaskContext], JSONValue]
LogSetup = tuple[str, str]  # (CONVEYOR_LOG_LEVEL, CONVEYOR_LOG_FORMAT)

_STOP = b"stop"  # parent -> child: exit cleanly (pickles never equal these two)
_STARTED = b"started"  # child -> parent: the request is unpickled, the handler starts now
# The time limit counts from _STARTED: a fresh child first spends about a second importing
# our code. Getting there (start-up, imports, unpickling) may take this much longer at most.
_START_ALLOWANCE_S = 60.0
# SIGKILL takes effect at once; this only bounds a child stuck in the kernel (D state).
_REAP_TIMEOUT_S = 1.0
_PAGE_MB = mmap.PAGESIZE / 2**20


@dataclass(frozen=True, slots=True)
class _Returned:
    result: JSONValue


@dataclass(frozen=True, slots=True)
class _Raised:
    """What a handler raised: the exception itself if it survives pickling, else its text."""

    error: Exception | None
    type_name: str
    message: str
    trace: str

    def rebuilt(self, pid: int) -> Exception:
        if self.error is None:
            return ChildTaskFailed(self.type_name, self.message, self.trace)
        self.error.add_note(f"raised in sync child process {pid}:\n{self.trace}")
        return self.error


class ChildProcess:
    """A spawned child that runs `fn(payload, ctx)` requests; killed past its task's limits."""

    def __init__(
        self,
        mp: SpawnContext,
        max_rss_mb: float | None,
        rss_check_interval_s: float,
        log_setup: LogSetup | None = None,
    ) -> None:
        self._max_rss_mb = max_rss_mb
        self._rss_check_interval_s = rss_check_interval_s
        self._conn, child_end = mp.Pipe()
        # daemon: multiprocessing kills it if the consumer exits without close() (so a
        # handler cannot start processes of its own with multiprocessing).
        self._process = mp.Process(target=_serve, args=(child_end, log_setup), daemon=True)
        with _main_hidden():
            self._process.start()
        child_end.close()
        assert self._process.pid is not None
        self.pid: int = self._process.pid
        self.tasks_done = 0
        self.closed = False  # killed or exited, reaped, pipe freed
        self._stopping = False  # close() was called: never hand it another task
        self._busy = False
        self._retiring_on: asyncio.AbstractEventLoop | None = None

    @property
    def alive(self) -> bool:
        return not self._stopping and self._process.is_alive()

    async def call(
        self, fn: SyncHandlerFn, payload: Any, ctx: TaskContext, timeout_s: float | None
    ) -> JSONValue:
        """fn(payload, ctx) in this child; kills it past `timeout_s` or its memory limit."""
        request = pickle.dumps((fn, payload, ctx))
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        fds = (self._conn.fileno(), self._process.sentinel)
        self._busy = True
        self.tasks_done += 1
        for fd in fds:
            loop.add_reader(fd, readable.set)
        try:
            self._send(request)
            reply = pickle.loads(await self._reply(readable, timeout_s))
        except asyncio.CancelledError:
            self.close()  # nobody waits for the result: stop burning CPU on it
            raise
        finally:
            for fd in fds:
                loop.remove_reader(fd)
            self._busy = False
            if not self.alive:
                self.close()
        if isinstance(reply, _Raised):
            raise reply.rebuilt(self.pid)
        assert isinstance(reply, _Returned)
        return reply.result

    def retire(self) -> None:
        """Ask the idle child to exit; the event loop reaps it once it has."""
        try:
            self._conn.send_bytes(_STOP)
        except OSError:
            pass  # already gone: the sentinel is readable and close() runs at once
        self._retiring_on = asyncio.get_running_loop()
        self._retiring_on.add_reader(self._process.sentinel, self.close)

    def close(self) -> None:
        """SIGKILL the child unless it has exited, reap it, and free the pipe (idempotent).

        A running call() is woken by the death and frees the pipe itself on its way out.
        """
        if self.closed:
            return
        self._stopping = True
        if self._process.exitcode is None:
            self._process.kill()
            self._process.join(_REAP_TIMEOUT_S)
        if self._busy:
            return
        if self._retiring_on is not None:
            self._retiring_on.remove_reader(self._process.sentinel)
        self._conn.close()
        if self._process.exitcode is not None:
            self._process.close()
        self.closed = True

    def _send(self, request: bytes) -> None:
        try:
            self._conn.send_bytes(request)
        except OSError:
            raise self._died() from None

    async def _reply(self, readable: asyncio.Event, timeout_s: float | None) -> bytes:
        """The child's reply to the request just sent; raises if it dies or overruns."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s + _START_ALLOWANCE_S
        while True:
            try:
                async with asyncio.timeout(self._next_check_s(deadline)):
                    await readable.wait()
            except TimeoutError:
                self._check_limits(deadline, timeout_s)
                continue
            readable.clear()
            message = self._receive()
            if message is None:
                continue  # a reader callback queued before we read the last message
            if message != _STARTED:
                return message
            if timeout_s is not None:
                deadline = time.monotonic() + timeout_s

    def _next_check_s(self, deadline: float | None) -> float | None:
        waits = [] if self._max_rss_mb is None else [self._rss_check_interval_s]
        if deadline is not None:
            waits.append(max(deadline - time.monotonic(), 0.0))
        return min(waits, default=None)

    def _check_limits(self, deadline: float | None, timeout_s: float | None) -> None:
        if deadline is not None and timeout_s is not None and time.monotonic() >= deadline:
            self.close()
            raise TaskTimedOut(timeout_s)
        if self._max_rss_mb is not None:
            rss_mb = _rss_mb(self.pid)
            if rss_mb > self._max_rss_mb:
                self.close()
                raise ChildMemoryExceeded(rss_mb, self._max_rss_mb)

    def _receive(self) -> bytes | None:
        """The child's next message, None if none came; raises ChildDied if it is gone."""
        try:
            if self._conn.poll():
                return self._conn.recv_bytes()
        except (EOFError, OSError):
            raise self._died() from None
        if wait([self._process.sentinel], timeout=0):
            raise self._died()
        return None

    def _died(self) -> ChildDied:
        self._process.join(_REAP_TIMEOUT_S)
        exitcode = self._process.exitcode
        self.close()
        return ChildDied(exitcode, _exit_status(exitcode))


def _rss_mb(pid: int) -> float:
    """Resident memory of `pid` from /proc (Linux); 0 if unknown: a death shows elsewhere."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_MB
    except (OSError, IndexError, ValueError):
        return 0.0


def _exit_status(exitcode: int | None) -> str:
    """multiprocessing's exit code in words: negative means killed by that signal."""
    if exitcode is None:
        return "exit status unknown"
    if exitcode >= 0:
        return f"exit code {exitcode}"
    try:
        return f"killed by {signal.Signals(-exitcode).name}"
    except ValueError:
        return f"killed by signal {-exitcode}"


def _die_with_parent() -> None:
    """In a child: ask Linux to SIGKILL us when the consumer dies, even by SIGKILL.

    Without it, a child busy with a long task outlives a killed consumer and burns CPU.
    """
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@contextmanager
def _main_hidden() -> Iterator[None]:
    """multiprocessing's spawn re-imports the parent's `__main__` in the child (a user's
    script, say) unless it cannot tell what it is: show it a blank one while starting."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _serve(conn: Connection, log_setup: LogSetup | None) -> None:
    """A child's life: run requests one at a time until told to stop or the parent is gone."""
    _die_with_parent()
    if log_setup is not None:
        configure_logging(*log_setup)
    # Ctrl-C reaches the whole process group; the consumer decides when its children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            request = conn.recv_bytes()
        except EOFError:
            return
        if request == _STOP:
            return
        conn.send_bytes(_run(conn, request))


def _run(conn: Connection, request: bytes) -> bytes:
    """The pickled reply to one request: the handler's result or what it raised."""
    try:
        fn, payload, ctx = pickle.loads(request)
        conn.send_bytes(_STARTED)
        with log_context(
            task_id=ctx.task_id,
            task=ctx.task,
            attempt=ctx.attempt,
            worker=ctx.worker,
            request_id=ctx.request_id,
        ):
            return pickle.dumps(_Returned(fn(payload, ctx)))
    except Exception as error:
        return pickle.dumps(_raised(error))


def _raised(error: Exception) -> _Raised:
    trace = "".join(traceback.format_exception(error))
    kept: Exception | None = error
    try:
        pickle.loads(pickle.dumps(error))  # some pickle but cannot be rebuilt (custom __init__)
    except Exception:
        kept = None
    return _Raised(kept, type(error).__qualname__, str(error), trace)
