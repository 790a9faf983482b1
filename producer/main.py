"""Wiring of the producer service: settings -> broker connection -> HTTP API (uvicorn)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import uvicorn
from fastapi import FastAPI

from conveyor.config import (
    EXIT_BAD_CONFIG,
    ProducerSettings,
    load_settings,
    redact_text,
    redact_url,
)
from conveyor.producer.http.app import create_app
from conveyor.producer.service import ProducerService
from conveyor.producer.store.database import migrate_database, schema_versions
from conveyor.shared.health import AliveFile
from conveyor.shared.logs import configure_logging
from conveyor.shared.runtime import run as run_on_loop
from conveyor.shared.task_loader import load_catalog_or_exit

log = logging.getLogger("conveyor.producer")


def build_app(settings: ProducerSettings) -> FastAPI:
    """The HTTP app with the producer service started and stopped by its lifespan."""
    service = ProducerService(settings)
    app = create_app(
        service,
        max_batch_size=settings.max_batch_size,
        max_payload_bytes=settings.max_payload_bytes,
        api_tokens=settings.api_token_list(),
        rate_limit_per_s=settings.rate_limit_per_s,
        catalog=service.catalog,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        alive = AliveFile(settings.health_file)
        alive.start()
        yield
        await alive.stop()
        await service.stop()

    app.router.lifespan_context = lifespan
    return app


class _Server(uvicorn.Server):
    """uvicorn's server, ending with exit code 0 after a graceful SIGTERM/SIGINT shutdown.

    uvicorn raises the signal again once it has shut down, so the process dies by it (exit
    -15, 143 in a container) although nothing failed; the consumer exits 0 after its graceful
    stop, and the producer does the same.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach only the main thread
            return
        signals = (signal.SIGINT, signal.SIGTERM)
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


async def serve(settings: ProducerSettings) -> None:
    """Run the HTTP API until SIGTERM/SIGINT (uvicorn handles the signals)."""
    config = uvicorn.Config(
        build_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        http=settings.http_protocol,
        log_config=None,  # keep our own logging set-up
        access_log=False,
        lifespan="on",
    )
    log.info("producer listening on http://%s:%d", settings.http_host, settings.http_port)
    await _Server(config).serve()


def refuse_outdated_schema(settings: ProducerSettings) -> None:
    """With CONVEYOR_AUTO_MIGRATE=false, stop with one line and exit code 2 (a deploy step
    was skipped: like a bad setting, starting again cannot help) unless the database has the
    schema this code needs. A database not reachable yet is left to the service, which
    waits for it and then refuses an old schema on its own (logging why)."""
    if settings.auto_migrate:
        return
    try:
        current, required = run_on_loop(
            schema_versions(settings.database_url.get_secret_value()), settings.event_loop
        )
    except Exception as error:
        log.warning("could not read the schema version yet: %s", redact_text(repr(error)))
        return
    if current != required:
        print(
            f"conveyor: the task database has schema version {current}, this Conveyor needs "
            f"{required}; run `conveyor migrate` first (CONVEYOR_AUTO_MIGRATE=false)",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_BAD_CONFIG)


def run_migrations() -> int:
    """`conveyor migrate`: bring CONVEYOR_DATABASE_URL's schema to this code's version and
    say so in one line; exit code 0, or 1 if the database refused (the error, redacted)."""
    settings = load_settings(ProducerSettings)
    configure_logging(settings.log_level, settings.log_format)
    where = redact_url(settings.database_url)
    try:
        before, after = run_on_loop(
            migrate_database(settings.database_url.get_secret_value()), settings.event_loop
        )
    except Exception as error:
        print(f"conveyor: could not migrate {where}: {redact_text(str(error))}", file=sys.stderr)
        return 1
    if before == after:
        print(f"{where}: schema version {after}, nothing to do")
    else:
        print(f"{where}: migrated from schema version {before} to {after}")
    return 0


def main() -> None:
    """Entry point of `python -m conveyor.producer` and `conveyor producer`."""
    settings = load_settings(ProducerSettings)
    configure_logging(settings.log_level, settings.log_format)
    load_catalog_or_exit(settings)  # a bad task module stops us before anything starts
    refuse_outdated_schema(settings)
    run_on_loop(serve(settings), settings.event_loop)
