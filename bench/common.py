"""Broker names, event loops and child processes shared by the benchmark modules."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from conveyor.shared.runtime import run
from conveyor.shared.topology import Topology

T = TypeVar("T")
LoopName = Literal["asyncio", "uvloop"]
StoreKind = Literal["sqlite", "postgres"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
CONVEYOR_QUEUE = "default"  # Conveyor's work queue short name (and routing key)
RAW_ROUTING_KEY = "work"
CONSUMER_PROCESSES = 2
CONFIRM_WINDOW = 256

_T0 = time.perf_counter()


def say(message: str) -> None:
    """Progress on stderr, so stdout holds only the table and the JSON line."""
    print(f"[{time.perf_counter() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def check_loopback(url: str) -> str:
    """The bench may only talk to a broker on this machine (the broker is shared)."""
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"bench: refusing non-loopback broker host {host!r}")
    return url


@dataclass(frozen=True, slots=True)
class Names:
    """Every broker name of one run, under a fresh namespace so it never touches others'."""

    namespace: str

    @property
    def conveyor(self) -> Topology:
        """Conveyor's own names in this namespace."""
        return Topology(self.namespace)

    @property
    def conveyor_queue(self) -> str:
        return self.conveyor.work_queue(CONVEYOR_QUEUE)

    @property
    def raw_exchange(self) -> str:
        return f"{self.namespace}.raw-tasks"

    @property
    def raw_dlx(self) -> str:
        return f"{self.namespace}.raw-dlx"

    @property
    def raw_queue(self) -> str:
        return f"{self.namespace}.raw-work"

    def queues(self) -> list[str]:
        """Every named queue the run may create: Conveyor's work queue, every `*_queue` name
        of its Topology (so names added there later are cleaned up too), the raw queue.

        Server-named exclusive queues (the bench's observers, the producers' finished
        notices) go with their connections; retry queues exist only for failed tasks (the
        bench's `echo` never fails) and expire on their own.
        """
        return [self.conveyor_queue, *_topology_names(self.conveyor, "_queue"), self.raw_queue]

    def exchanges(self) -> list[str]:
        """Every exchange the run may create: every `*_exchange` of the Topology, and raw's."""
        return [*_topology_names(self.conveyor, "_exchange"), self.raw_exchange, self.raw_dlx]


def _topology_names(topology: Topology, suffix: str) -> list[str]:
    """The values of the Topology's name properties ending in `suffix`."""
    return [
        str(getattr(topology, attr))
        for attr in sorted(dir(Topology))
        if attr.endswith(suffix) and isinstance(getattr(Topology, attr), property)
    ]


@dataclass(frozen=True, slots=True)
class Config:
    """One run's parameters, the same for the raw pair and Conveyor."""

    url: str
    names: Names
    tasks: int
    latency_rate: float
    latency_seconds: float
    queue_type: Literal["quorum", "classic"]
    store: StoreKind
    postgres_url: str
    http_concurrency: int
    log_tasks_only: bool = False  # --log-tasks: only the CONVEYOR_LOG_TASKS on/off drains

    @property
    def timeout_s(self) -> float:
        """Deadline of one enqueue or drain: generous, but never endless."""
        return 60 + self.tasks / 100


def run_on(main: Coroutine[Any, Any, T], loop: LoopName) -> T:
    """Run `main` on a fresh event loop of kind `loop` (the services' own loop runner)."""
    return run(main, loop)


class ChildError(RuntimeError):
    """A consumer subprocess died or misbehaved; carries the tail of its log."""


class Children:
    """Every subprocess the bench starts, so all of them die with it, also on errors."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}

    def spawn(
        self, argv: Sequence[str], env: Mapping[str, str], label: str
    ) -> subprocess.Popen[bytes]:
        """Start `argv` from the project root; its output goes to a log file, not our tty."""
        log_path = self.log_dir / f"{label}-{len(self._procs)}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                list(argv),
                cwd=ROOT,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self._procs.append(proc)
        self._logs[proc.pid] = log_path
        return proc

    def log_tail(self, proc: subprocess.Popen[bytes], lines: int = 15) -> str:
        """The last lines a child wrote, for error messages."""
        path = self._logs.get(proc.pid)
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        """Fail fast instead of waiting for a deadline when a child exited early."""
        for proc in procs:
            if proc.poll() is not None:
                raise ChildError(
                    f"child {proc.args!r} exited with {proc.returncode}:\n{self.log_tail(proc)}"
                )

    async def stop(self, procs: Sequence[subprocess.Popen[bytes]], grace_s: float = 10.0) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL whatever is still alive after `grace_s`."""
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for proc in procs:
            if proc.poll() is None:
                say(f"child {proc.pid} ignored SIGTERM for {grace_s:g}s; killing it")
                proc.kill()
                proc.wait(timeout=5)

    def kill_all(self) -> None:
        """SIGKILL every child still running (synchronous: usable in finally and atexit)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                say(f"child {proc.pid} did not die after SIGKILL")


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Our environment without stray CONVEYOR_* settings, plus `extra`: one known config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(extra)
    return env
