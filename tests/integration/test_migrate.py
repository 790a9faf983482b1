"""`conveyor migrate` and CONVEYOR_AUTO_MIGRATE=false, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from conveyor.config.store import async_database_url
from conveyor.producer.store.database import schema_versions
from conveyor.producer.store.schema import MIGRATIONS, latest_version, schema_version
from tests.integration.conftest import OpenApi
from tests.support import REPO, ServiceProcess, free_port


def migrate_command(database_url: str) -> subprocess.CompletedProcess[str]:
    """`conveyor migrate` as an operator runs it (the console script's module)."""
    return subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "migrate"],
        env={**os.environ, "CONVEYOR_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


async def at_version(database_url: str, version: int) -> None:
    """Give the database the schema of `version` (as an older Conveyor left it)."""
    engine = create_async_engine(async_database_url(database_url))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: schema_version.create(sync))
            await connection.execute(insert(schema_version).values(id=1, version=version))
            for migration in MIGRATIONS[:version]:
                await connection.run_sync(migration)
    finally:
        await engine.dispose()


async def refused(spawn: Callable[..., ServiceProcess], database_url: str) -> str:
    """Start a producer with CONVEYOR_AUTO_MIGRATE=false; its output once it exited 2."""
    producer = spawn(
        "producer", database_url=database_url, auto_migrate="false", http_port=free_port()
    )
    assert await producer.wait(60) == 2, producer.log()
    return producer.log()


async def test_without_auto_migrate_the_producer_refuses_an_empty_or_old_database(
    spawn: Callable[..., ServiceProcess], database_url: str
) -> None:
    empty = await refused(spawn, database_url)
    required = latest_version()
    assert [line for line in empty.splitlines() if line.startswith("conveyor:")] == [
        f"conveyor: the task database has schema version 0, this Conveyor needs {required}; "
        "run `conveyor migrate` first (CONVEYOR_AUTO_MIGRATE=false)"
    ]
    assert await schema_versions(async_database_url(database_url)) == (0, required)  # untouched

    await at_version(database_url, required - 1)
    old = await refused(spawn, database_url)
    assert f"schema version {required - 1}, this Conveyor needs {required}" in old
    assert "migrating" not in old
    assert await schema_versions(async_database_url(database_url)) == (required - 1, required)


async def test_migrate_brings_the_schema_up_then_the_producer_starts_without_migrating(
    open_api: OpenApi, database_url: str
) -> None:
    done = migrate_command(database_url)
    assert done.returncode == 0, done.stderr
    assert f"migrated from schema version 0 to {latest_version()}" in done.stdout
    again = migrate_command(database_url)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stderr
    assert await schema_versions(async_database_url(database_url)) == (latest_version(),) * 2

    api = await open_api(database_url=database_url, auto_migrate="false")
    reply = await api.post("/tasks", json={"task": "echo", "payload": {}})
    assert reply.status_code == 202, reply.text
