"""The task-record tables (SQLAlchemy Core) and the versioned migrations that create them.

Migrations are a plain list: migration N brings the schema from version N-1 to N. The
applied version lives in `conveyor_schema`; `migrate()` runs the missing ones at start, under
a lock so that producer replicas starting together apply each exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeEngine

from conveyor.shared.errors import SchemaOutdated

log = logging.getLogger(__name__)

metadata = MetaData()


class JSONText(TypeDecorator[Any]):
    """JSON kept as TEXT on SQLite: a column declared JSON there has NUMERIC affinity, which
    turns a stored `7` or `1e400` into a number the JSON decoder then cannot read."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else orjson.dumps(value).decode()

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else orjson.loads(value)


JSONValue = JSON().with_variant(JSONB(), "postgresql").with_variant(JSONText(), "sqlite")

schema_version = Table(
    "conveyor_schema",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)


def _task_columns() -> list[Column[Any] | Index]:
    """The columns of conveyor_tasks as schema version 1 created them."""
    return [
        # UUIDv7 ids sort by creation time: "newest first" and the list cursor use the id.
        Column("id", String(64), primary_key=True),
        Column("task", String(200), nullable=False),
        Column("queue", String(200), nullable=False),
        Column("status", String(16), nullable=False),
        # Ordering key of the latest event applied (see store.progress_of); events with a
        # lower key are late or duplicates and change nothing.
        Column("progress", Integer, nullable=False, default=0),
        Column("payload", JSONValue, nullable=False),
        Column("result", JSONValue),
        Column("error", JSONValue),
        Column("attempts", Integer, nullable=False, default=0),
        Column("max_retries", Integer, nullable=False),
        Column("timeout_s", Double, nullable=False),
        Column("idempotency_key", String(200), unique=True),
        Column("worker", String(200)),
        Column("request_id", String(200)),
        # Seconds since the epoch (UTC): the same type and precision on SQLite and PostgreSQL.
        Column("created_at", Double, nullable=False),
        Column("started_at", Double),
        Column("finished_at", Double),
        # The transactional outbox: False until the broker confirmed the publish.
        Column("published", Boolean, nullable=False, default=False),
        Index("ix_conveyor_tasks_status_id", "status", "id"),
        Index("ix_conveyor_tasks_task_id", "task", "id"),
        Index("ix_conveyor_tasks_published_created", "published", "created_at"),
        Index("ix_conveyor_tasks_finished_at", "finished_at"),
    ]


# Columns added after version 1: (name, type, SQL default), in the order added.
_ADDED_TO_TASKS: list[tuple[str, TypeEngine[Any], str | None]] = [
    ("next_attempt_at", Double(), None),  # v2: when a `retrying` task runs again
    ("deliveries", Integer(), "0"),  # v2: redeliveries counted by run checks (classic queues)
    ("due_at", Double(), None),  # v3: when a `scheduled` (delayed) task is to be published
]
_ADDED_IN = {"next_attempt_at": 2, "deliveries": 2, "due_at": 3}

tasks = Table(
    "conveyor_tasks",
    metadata,
    *_task_columns(),
    *(
        Column(name, type_, nullable=default is None, server_default=default)
        for name, type_, default in _ADDED_TO_TASKS
    ),
)

# v7: what keeps reads flat with millions of queued or delayed records (bench/backlog.py).
BACKLOG_INDEXES = (
    # GET /tasks?status=&task=: newest first within both filters, instead of walking every
    # row of one filter (a million queued `sleep` tasks) for the few matching the other.
    Index("ix_conveyor_tasks_status_task_id", tasks.c.status, tasks.c.task, tasks.c.id),
    # The oldest queued task (SystemWatch, every 5 s): the first entry, not every queued row.
    Index(
        "ix_conveyor_tasks_status_since",
        tasks.c.status,
        func.coalesce(tasks.c.due_at, tasks.c.created_at),
    ),
    # The outbox sweeper's unconfirmed `queued` records, without the delayed ones (which stay
    # unpublished until due): a few entries where (published, created_at) held a million.
    Index(
        "ix_conveyor_tasks_unpublished",
        tasks.c.status,
        tasks.c.created_at,
        postgresql_where=tasks.c.published.is_(False),
        sqlite_where=tasks.c.published.is_(False),
    ),
)

schedules = Table(
    "conveyor_schedules",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("cron", String(200), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("task", String(200), nullable=False),
    Column("payload", JSONValue, nullable=False),
    Column("misfire", String(8), nullable=False),
    Column("queue", String(200)),
    Column("max_retries", Integer),
    Column("timeout_s", Double),
    Column("paused", Boolean, nullable=False, default=False),
    # The latest tick fired (or skipped by the misfire policy); ticks after it are due.
    Column("last_tick_at", Double),
    Column("source", String(8), nullable=False, default="api"),  # api | file
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)

dead_letters = Table(
    "conveyor_dead_letters",
    metadata,
    # The task id (the message id); a made-up one for messages without any.
    Column("task_id", String(64), primary_key=True),
    Column("task", String(200)),
    Column("queue", String(200)),
    Column("reason", String(64), nullable=False),
    Column("error", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("dead_lettered_at", Double, nullable=False),
    # The message as it arrived, to publish it again on requeue.
    Column("body", LargeBinary, nullable=False),
    Column("headers", JSONValue, nullable=False),
    Column("content_type", String(200)),
    Index("ix_conveyor_dead_letters_at", "dead_lettered_at", "task_id"),
)


def _worker_columns() -> list[Column[Any]]:
    """The columns of conveyor_workers as schema version 4 created them."""
    return [
        # The latest heartbeat of each consumer process (see shared/workers.py).
        Column("id", String(200), primary_key=True),
        Column("hostname", String(255), nullable=False),
        Column("pid", Integer, nullable=False),
        Column("cpu_count", Integer, nullable=False),
        Column("concurrency", Integer, nullable=False),
        Column("queues", JSONValue, nullable=False),
        Column("version", String(64), nullable=False),
        Column("started_at", Double, nullable=False),
        Column("last_heartbeat_at", Double, nullable=False),
        Column("heartbeat_s", Double, nullable=False),
        Column("state", String(8), nullable=False),  # online | offline; lost is read off the age
        Column("running", JSONValue, nullable=False),
        Column("processed", Integer, nullable=False),
        Column("failed", Integer, nullable=False),
    ]


# v5: the address a worker reaches the broker from (its machine's address in the cluster).
_WORKER_ADDRESS = ("address", String(255))
# v6: the tasks a worker serves (its CONVEYOR_TASKS), for GET /task-types during rollouts.
_WORKER_TASKS = ("tasks", JSONValue)

workers = Table(
    "conveyor_workers",
    metadata,
    *_worker_columns(),
    Column(_WORKER_ADDRESS[0], _WORKER_ADDRESS[1]),
    Column(_WORKER_TASKS[0], _WORKER_TASKS[1]),
)


def _v1_create_tasks(connection: Connection) -> None:
    Table("conveyor_tasks", MetaData(), *_task_columns()).create(connection)


def _add_task_columns(connection: Connection, version: int) -> None:
    for name, type_, default in _ADDED_TO_TASKS:
        if _ADDED_IN[name] != version:
            continue
        sql_type = type_.compile(dialect=connection.dialect)
        not_null = f" NOT NULL DEFAULT {default}" if default is not None else ""
        connection.execute(
            text(f"ALTER TABLE conveyor_tasks ADD COLUMN {name} {sql_type}{not_null}")
        )


def _v2_retries_and_dead_letters(connection: Connection) -> None:
    _add_task_columns(connection, 2)
    dead_letters.create(connection)


def _v3_schedules_and_delays(connection: Connection) -> None:
    _add_task_columns(connection, 3)
    Index("ix_conveyor_tasks_status_due", tasks.c.status, tasks.c.due_at).create(connection)
    schedules.create(connection)


def _v4_workers(connection: Connection) -> None:
    Table("conveyor_workers", MetaData(), *_worker_columns()).create(connection)


def _v5_worker_addresses(connection: Connection) -> None:
    name, type_ = _WORKER_ADDRESS
    sql_type = type_.compile(dialect=connection.dialect)
    connection.execute(text(f"ALTER TABLE conveyor_workers ADD COLUMN {name} {sql_type}"))


def _v6_worker_tasks(connection: Connection) -> None:
    name, type_ = _WORKER_TASKS
    sql_type = type_.compile(dialect=connection.dialect)
    connection.execute(text(f"ALTER TABLE conveyor_workers ADD COLUMN {name} {sql_type}"))


def _v7_backlog_indexes(connection: Connection) -> None:
    for index in BACKLOG_INDEXES:
        index.create(connection)


Migration = Callable[[Connection], None]

# Append only: never edit a migration that has shipped.
MIGRATIONS: Sequence[Migration] = (
    _v1_create_tasks,
    _v2_retries_and_dead_letters,
    _v3_schedules_and_delays,
    _v4_workers,
    _v5_worker_addresses,
    _v6_worker_tasks,
    _v7_backlog_indexes,
)


def latest_version() -> int:
    """The schema version this code needs."""
    return len(MIGRATIONS)


async def current_version(connection: AsyncConnection) -> int:
    """The schema version the database has: 0 for an empty one."""
    exists = await connection.run_sync(lambda sync: inspect(sync).has_table(schema_version.name))
    if not exists:
        return 0
    return int((await connection.execute(select(schema_version.c.version))).scalar() or 0)


def _refuse_newer(current: int) -> None:
    if current > latest_version():
        raise RuntimeError(
            f"the task database has schema version {current}, newer than this "
            f"Conveyor's {latest_version()}: upgrade Conveyor"
        )


async def check_version(connection: AsyncConnection) -> int:
    """The database's version if it is the one this code needs; SchemaOutdated if older
    (nothing is changed: for CONVEYOR_AUTO_MIGRATE=false)."""
    current = await current_version(connection)
    _refuse_newer(current)
    if current < latest_version():
        raise SchemaOutdated(current, latest_version())
    return current


async def migrate(connection: AsyncConnection) -> int:
    """Apply the migrations the database lacks (in one transaction); returns the version."""
    await _lock(connection)
    await connection.run_sync(lambda sync: schema_version.create(sync, checkfirst=True))
    current = (await connection.execute(select(schema_version.c.version))).scalar()
    if current is None:
        await connection.execute(insert(schema_version).values(id=1, version=0))
        current = 0
    _refuse_newer(current)
    for version, migration in enumerate(MIGRATIONS[current:], start=current + 1):
        log.info("migrating the task database to schema version %d", version)
        await connection.run_sync(migration)
        await connection.execute(update(schema_version).values(version=version))
    return latest_version()


async def _lock(connection: AsyncConnection) -> None:
    """Serialize migrations of replicas starting at once (SQLite locks the whole file)."""
    if connection.dialect.name == "postgresql":
        await connection.execute(text("SELECT pg_advisory_xact_lock(4242001)"))


def json_dumps(value: object) -> str:
    """JSON for the database columns (orjson, like the wire format)."""
    return orjson.dumps(value).decode()
