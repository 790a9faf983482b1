"""Test helpers: unique namespaces, waiting with deadlines, service processes, event logs,
and a private RabbitMQ node for tests that stop or restart the broker."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue

from conveyor.config.tasks import BUILTIN_TASKS_MODULE
from conveyor.shared.catalog import Catalog
from conveyor.shared.events import TaskEvent, decode_events
from conveyor.shared.records import TaskStatus
from conveyor.shared.task_loader import TEST_TASKS_MODULE, catalog_of, load_tasks
from conveyor.shared.topology import Topology, all_retry_delays_ms

RUN_ID = secrets.token_hex(3)
_counter = itertools.count(1)
REPO = Path(__file__).resolve().parent.parent


def run_bench(module: str, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """`python -m <module> <args>` from the repository, without our CONVEYOR_* settings."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def unique_namespace(label: str = "t") -> str:
    """A namespace no other test (or test run) uses."""
    return f"test-{RUN_ID}-{label}-{next(_counter)}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]], timeout_s: float, what: str
) -> None:
    """Poll `condition` until true; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_http(
    client: httpx.AsyncClient, path: str, timeout_s: float, status: int = 200
) -> None:
    """Wait until GET `path` answers `status` (a service that is starting refuses at first)."""

    async def answers() -> bool:
        try:
            return (await client.get(path)).status_code == status
        except httpx.TransportError:
            return False

    await wait_until(answers, timeout_s, f"GET {path} to answer {status}")


class ServiceProcess:
    """`python -m conveyor.producer|consumer` as a child process, its stderr kept in a file."""

    def __init__(
        self, module: str, env: dict[str, str], log_dir: Path, cwd: Path | None = None
    ) -> None:
        self.module = module
        self.log_path = log_dir / f"{module}-{next(_counter)}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"conveyor.{module}"],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd or tempfile.gettempdir(),  # runs from any working directory
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    async def wait(self, timeout_s: float) -> int:
        """Exit code, waiting at most `timeout_s`."""
        await wait_until(lambda: self.proc.poll() is not None, timeout_s, f"{self.module} exit")
        return int(self.proc.returncode)

    async def wait_log(self, text: str, timeout_s: float = 60) -> None:
        await wait_until(lambda: text in self.log(), timeout_s, f"{text!r} in {self.module} log")

    def stop(self) -> None:
        """Kill if still running (test teardown)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


class EventLog:
    """Collects every task status event of a namespace (exclusive queue on the events exchange)."""

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []
        self._queue: AbstractQueue | None = None

    async def start(self, channel: AbstractChannel, topology: Topology) -> None:
        exchange = await channel.declare_exchange(
            topology.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await self._queue.bind(exchange, routing_key="task.*")
        await self._queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.events.extend(decode_events(message.body))

    def of_state(self, state: TaskStatus) -> list[TaskEvent]:
        return [event for event in self.events if event.state is state]

    def runs_of(self, task_id: str) -> list[TaskEvent]:
        """The `running` events of one task, in order: one per delivery."""
        return [e for e in self.of_state(TaskStatus.RUNNING) if e.task_id == task_id]

    async def wait_started(self, task_id: str, timeout_s: float = 20) -> TaskEvent:
        """Wait for the first `running` event of `task_id` and return it."""
        await wait_until(lambda: bool(self.runs_of(task_id)), timeout_s, f"task {task_id} to start")
        return self.runs_of(task_id)[0]

    def finished_ids(self) -> set[str]:
        return {e.task_id for e in self.events if e.state is not TaskStatus.RUNNING}

    def succeeded_count(self) -> Counter[str]:
        """task id -> how many succeeded events it got."""
        return Counter(e.task_id for e in self.of_state(TaskStatus.SUCCEEDED))

    def succeeded_by_worker(self) -> Counter[str]:
        return Counter(e.worker for e in self.of_state(TaskStatus.SUCCEEDED))

    async def wait_finished(self, ids: set[str] | int, timeout_s: float) -> None:
        """Wait until every task in `ids` (or that many tasks) has a terminal event."""
        if isinstance(ids, int):
            count = ids
            await wait_until(lambda: len(self.finished_ids()) >= count, timeout_s, f"{count} tasks")
        else:
            wanted = set(ids)
            await wait_until(
                lambda: wanted <= self.finished_ids(), timeout_s, f"{len(wanted)} tasks to finish"
            )


async def delete_namespace(
    connection: AbstractConnection, topology: Topology, queues: list[str]
) -> None:
    """Delete every queue and exchange of `topology` (a test's cleanup)."""
    channel = await connection.channel()
    names = [topology.work_queue(q) for q in queues]
    names += [topology.retry_queue(q, ms) for q in queues for ms in all_retry_delays_ms(600_000)]
    names += topology.service_queues
    for name in names:
        await channel.queue_delete(name)
    for name in topology.exchanges:
        await channel.exchange_delete(name)
    await channel.close()


async def queue_depth(channel: AbstractChannel, name: str) -> int:
    """Ready messages in queue `name` (passive declare)."""
    declared = await channel.declare_queue(name, passive=True)
    return int(declared.declaration_result.message_count or 0)


class RabbitNode:
    """A private RabbitMQ node on spare ports, for tests that stop or restart the broker.

    Never touches the shared broker: every rabbitmqctl call names this node. Where the tests
    run as root against Debian's RabbitMQ: `rabbitmq-server` drops to the `rabbitmq` user (so
    the node's folder must be writable by it), and /etc/rabbitmq/rabbitmq.conf pins the shared
    broker's listener, which wins over RABBITMQ_NODE_PORT (so the node gets its own config).
    """

    def __init__(self) -> None:
        self.name = f"conveyor-{RUN_ID}-{secrets.token_hex(2)}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="conveyor-rabbit-"))
        os.chmod(self.dir, 0o777)
        (self.dir / "plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
        }

    def ctl(self, *args: str, timeout_s: float = 90) -> str:
        """`rabbitmqctl -n <this node> ARGS`: its output."""
        return self._ctl(*args, timeout_s=timeout_s)

    def kill(self) -> int:
        """SIGKILL the node's Erlang VM (its pid file names it), as a crash would: its pid."""
        pid = int((self.dir / "pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        return pid

    def _ctl(self, *args: str, timeout_s: float = 90) -> str:
        done = subprocess.run(
            ["rabbitmqctl", "-n", self.name, *args],
            env=self._env(),
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        return done.stdout

    def close_connections(self, name_part: str) -> int:
        """Force-close this node's client connections whose name holds `name_part`."""
        closed = 0
        for line in self._ctl("list_connections", "pid", "client_properties", "-q").splitlines():
            pid, _, properties = line.partition("\t")
            if name_part in properties:
                self._ctl("close_connection", pid, "closed by a test")
                closed += 1
        return closed

    def close_connections_at_once(self, name_part: str) -> int:
        """Like `close_connections`, in one rabbitmqctl call (each call costs a second or
        more, time in which the clients may reconnect): how many were closed."""
        if not name_part or any(c in name_part for c in '"\\'):
            raise ValueError(f"name part {name_part!r} must be plain text")
        erlang = (
            f'Part = <<"{name_part}">>, '
            "Pids = [P || P <- rabbit_networking:connections(), "
            "{client_properties, Props} <- "
            "rabbit_networking:connection_info(P, [client_properties]), "
            '{<<"connection_name">>, longstr, Name} <- Props, '
            "binary:match(Name, Part) =/= nomatch], "
            '[rabbit_networking:close_connection(P, "closed by a test") || P <- Pids], '
            "length(Pids)."
        )
        return int(self._ctl("eval", erlang).strip())

    def set_alarm(self, resource: str, on: bool, timeout_s: float = 30) -> None:
        """Raise or clear the `memory` or `disk` alarm, returning once the node reports it so:
        publishing connections get blocked while on. Memory: a watermark no node fits under
        (default 0.4 back); disk: a free-space limit no disk has (the default 50 MB back)."""
        limit = {
            ("memory", True): "vm_memory_monitor:set_vm_memory_high_watermark(0.000001)",
            ("memory", False): "vm_memory_monitor:set_vm_memory_high_watermark(0.4)",
            ("disk", True): "rabbit_disk_monitor:set_disk_free_limit(1000000000000000)",
            ("disk", False): "rabbit_disk_monitor:set_disk_free_limit(50000000)",
        }[resource, on]
        tries = int(timeout_s * 10)
        erlang = (
            f"{limit}, "
            "Wait = fun Loop(0) -> timeout; Loop(N) -> "
            f"On = lists:any(fun({{{{resource_limit, {resource}, _}}, _}}) -> true; "
            "(_) -> false end, rabbit_alarm:get_alarms()), "
            f"case On of {str(on).lower()} -> ok; _ -> timer:sleep(100), Loop(N - 1) end end, "
            f"Wait({tries})."
        )
        outcome = self._ctl("eval", erlang, timeout_s=timeout_s + 60).strip()
        if outcome != "ok":
            state = "off" if on else "on"
            raise AssertionError(f"{resource} alarm still {state} after {timeout_s}s")

    def start(self, timeout_s: float = 60) -> None:
        subprocess.run(
            ["rabbitmq-server", "-detached"], env=self._env(), check=True, capture_output=True
        )
        # -detached returns before the node registers: await_startup fails fast until it has.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._ctl("await_startup", "--timeout", str(int(timeout_s)))
                return
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def is_running(self) -> bool:
        try:
            self._ctl("ping", timeout_s=20)
        except (subprocess.SubprocessError, OSError):
            return False
        return True

    def stop(self) -> None:
        self._ctl("stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        try:
            self.stop()
        except (subprocess.SubprocessError, OSError):
            pass
        if os.environ.get("CONVEYOR_TEST_KEEP_NODE_DIRS"):
            return  # kept for a post-mortem: the node's logs are in log/
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def service_spawner(
    amqp_url: str, namespace: str, log_dir: Path
) -> Iterator[Callable[..., ServiceProcess]]:
    """`start(module, **settings)` runs a service in `namespace`; all are killed on exit.
    An `amqp_url` among the settings replaces the spawner's (a node list, say)."""
    started: list[ServiceProcess] = []

    def start(module: str = "consumer", cwd: Path | None = None, **settings: Any) -> ServiceProcess:
        # Each test's producers share a store of their own unless told otherwise.
        settings.setdefault("database_url", f"sqlite:///{log_dir / 'tasks.db'}")
        url = str(settings.pop("amqp_url", amqp_url))
        process = ServiceProcess(module, consumer_env(url, namespace, **settings), log_dir, cwd)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop()


def consumer_env(amqp_url: str, namespace: str, **extra: Any) -> dict[str, str]:
    """Environment of a consumer/producer process for a test namespace."""
    env = {
        "CONVEYOR_AMQP_URL": amqp_url,
        "CONVEYOR_NAMESPACE": namespace,
        "CONVEYOR_LOG_LEVEL": "INFO",
        "CONVEYOR_HEARTBEAT_S": "5",
        # Many consumers run side by side: each serves its metrics on a free port (logged).
        "CONVEYOR_METRICS_PORT": "0",
    }
    env.update({f"CONVEYOR_{key.upper()}": str(value) for key, value in extra.items()})
    return env


def builtin_catalog(test_tasks: bool = False) -> Catalog:
    """The catalog the services build by default (CONVEYOR_TASKS unset)."""
    modules = [BUILTIN_TASKS_MODULE, *([TEST_TASKS_MODULE] if test_tasks else [])]
    return catalog_of(load_tasks(modules))
