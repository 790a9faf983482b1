"""Handlers of the built-in tasks, keyed by the same names as the task catalog.

A handler takes the validated payload model and a TaskContext and returns a JSON-able result.
Async handlers run on the event loop; sync handlers (CPU work, blocking I/O) run in child
processes, so the event loop keeps AMQP heartbeats flowing while they work.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib
from pydantic import SecretStr

from conveyor.shared.builtin_tasks import (
    CpuPayload,
    CrashPayload,
    EchoPayload,
    FailPayload,
    SendEmailPayload,
    SleepPayload,
)
from conveyor.shared.errors import NotConfigured, PermanentFailure, Retry, TaskFailed

JSONValue = Any  # whatever orjson can serialize


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler may know about the run it is part of."""

    task_id: str
    task: str
    attempt: int
    worker: str


AsyncHandlerFn = Callable[[Any, TaskContext], Awaitable[JSONValue]]
SyncHandlerFn = Callable[[Any, TaskContext], JSONValue]


@dataclass(frozen=True, slots=True)
class Handler:
    """A handler function and where it runs: on the loop (async) or in a child process."""

    fn: AsyncHandlerFn | SyncHandlerFn
    sync: bool = False


async def echo(payload: EchoPayload, ctx: TaskContext) -> JSONValue:
    return payload.model_dump(mode="json")


async def sleep(payload: SleepPayload, ctx: TaskContext) -> JSONValue:
    await asyncio.sleep(payload.seconds)
    return {"slept_s": payload.seconds}


async def fail(payload: FailPayload, ctx: TaskContext) -> JSONValue:
    if payload.times is None or ctx.attempt <= payload.times:
        if payload.permanent:
            raise PermanentFailure(payload.message)
        if payload.retry_after_s is not None:
            raise Retry(payload.message, delay_s=payload.retry_after_s)
        raise TaskFailed(payload.message)
    return {"succeeded_on_attempt": ctx.attempt}


def cpu(payload: CpuPayload, ctx: TaskContext) -> JSONValue:
    """Burn CPU for `ms` milliseconds (runs in a child process)."""
    deadline = time.perf_counter() + payload.ms / 1000
    iterations = 0
    while time.perf_counter() < deadline:
        iterations += 1
    return {"ms": payload.ms, "iterations": iterations}


async def crash(payload: CrashPayload, ctx: TaskContext) -> JSONValue:
    """Kill the whole consumer process, unacked task and all (crash-loop tests only)."""
    os._exit(payload.exit_code)


def make_send_email(smtp_url: SecretStr | None) -> AsyncHandlerFn:
    """The send_email handler, bound to the SMTP server at `smtp_url`."""

    async def send_email(payload: SendEmailPayload, ctx: TaskContext) -> JSONValue:
        if smtp_url is None:
            raise NotConfigured("send_email needs CONVEYOR_SMTP_URL (smtp://user:pass@host:port)")
        url = urlsplit(smtp_url.get_secret_value())
        message = EmailMessage()
        message["From"] = unquote(url.username or "conveyor") + f"@{url.hostname}"
        message["To"] = payload.to
        message["Subject"] = payload.subject
        message["Message-ID"] = f"<{ctx.task_id}@conveyor>"
        message.set_content(payload.body)
        await aiosmtplib.send(
            message,
            hostname=url.hostname,
            port=url.port or (465 if url.scheme == "smtps" else 25),
            username=unquote(url.username) if url.username else None,
            password=unquote(url.password) if url.password else None,
            use_tls=url.scheme == "smtps",
            start_tls=False if url.scheme == "smtps" else None,
            timeout=30,
        )
        return {"to": payload.to, "message_id": message["Message-ID"]}

    return send_email


def builtin_handlers(smtp_url: SecretStr | None = None) -> dict[str, Handler]:
    """Handlers of every built-in task (crash included; the catalog decides if it exists)."""
    return {
        "echo": Handler(echo),
        "sleep": Handler(sleep),
        "fail": Handler(fail),
        "cpu": Handler(cpu, sync=True),
        "send_email": Handler(make_send_email(smtp_url)),
        "crash": Handler(crash),
    }
