"""Wiring of the producer service: settings -> broker connection -> HTTP API (uvicorn)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from conveyor.config import ProducerSettings, load_settings
from conveyor.producer.api import create_app
from conveyor.producer.service import ProducerService
from conveyor.shared.health import keep_alive
from conveyor.shared.logs import configure_logging
from conveyor.shared.runtime import run as run_on_loop

log = logging.getLogger("producer")


def build_app(settings: ProducerSettings) -> FastAPI:
    """The HTTP app with the producer service started and stopped by its lifespan."""
    service = ProducerService(settings)
    app = create_app(
        service,
        max_batch_size=settings.max_batch_size,
        max_payload_bytes=settings.max_payload_bytes,
        api_tokens=settings.api_token_list(),
        rate_limit_per_s=settings.rate_limit_per_s,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        alive = asyncio.create_task(keep_alive(settings.health_file))
        yield
        alive.cancel()
        await asyncio.gather(alive, return_exceptions=True)
        await service.stop()

    app.router.lifespan_context = lifespan
    return app


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
    await uvicorn.Server(config).serve()


def main() -> None:
    """Entry point of `python -m producer` and `conveyor producer`."""
    settings = load_settings(ProducerSettings)
    configure_logging(settings.log_level, settings.log_format)
    run_on_loop(serve(settings), settings.event_loop)
