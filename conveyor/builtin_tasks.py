"""The built-in tasks (echo, sleep, fail, cpu, send_email): for the demo, tests and benchmarks.

They are the default of CONVEYOR_TASKS (`conveyor.builtin_tasks`). Your own tasks live in your
own modules, written the same way; list this module beside yours to keep these.
"""

from __future__ import annotations

import asyncio
import time
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from conveyor.config.tasks import TaskSettings
from conveyor.shared.errors import NotConfigured, PermanentFailure, Retry, TaskFailed
from conveyor.shared.tasks import TaskContext, task


class StrictPayload(BaseModel):
    """Payloads reject unknown fields, so a typo is an error rather than silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EchoPayload(BaseModel):
    """Anything: echo returns it unchanged."""

    model_config = ConfigDict(extra="allow", frozen=True)


class SleepPayload(StrictPayload):
    seconds: float = Field(ge=0, le=86_400, description="How long to sleep, in seconds.")


class FailPayload(StrictPayload):
    message: str = Field(default="failed on purpose", max_length=10_000)
    times: int | None = Field(
        default=None,
        ge=0,
        description="Fail this many attempts, then succeed; absent: fail every attempt.",
    )
    permanent: bool = Field(default=False, description="Fail for good: no retries.")
    retry_after_s: float | None = Field(
        default=None, ge=0, le=3600, description="Ask to be retried after this long instead."
    )


class CpuPayload(StrictPayload):
    ms: int = Field(ge=0, le=86_400_000, description="Milliseconds of synchronous busy loop.")


class SendEmailPayload(StrictPayload):
    to: str = Field(
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=320, description="Recipient address."
    )
    subject: str = Field(max_length=998)
    body: str = Field(max_length=1_000_000)


@task(description="Returns its payload.")
async def echo(payload: EchoPayload) -> Any:
    return payload.model_dump(mode="json")


@task(description="Sleeps `seconds` on the event loop.")
async def sleep(payload: SleepPayload) -> Any:
    await asyncio.sleep(payload.seconds)
    return {"slept_s": payload.seconds}


@task(description="Raises `message`; succeeds after `times` fails.")
async def fail(payload: FailPayload, ctx: TaskContext) -> Any:
    if payload.times is None or ctx.attempt <= payload.times:
        if payload.permanent:
            raise PermanentFailure(payload.message)
        if payload.retry_after_s is not None:
            raise Retry(payload.message, delay_s=payload.retry_after_s)
        raise TaskFailed(payload.message)
    return {"succeeded_on_attempt": ctx.attempt}


@task(description="Busy-loops `ms` milliseconds off the event loop.")
def cpu(payload: CpuPayload) -> Any:
    """A plain def: it runs in a child process, so the consumer's heartbeats keep flowing."""
    deadline = time.perf_counter() + payload.ms / 1000
    iterations = 0
    while time.perf_counter() < deadline:
        iterations += 1
    return {"ms": payload.ms, "iterations": iterations}


@task(description="Sends an email through SMTP.")
async def send_email(payload: SendEmailPayload, ctx: TaskContext) -> Any:
    # Read where the task runs, as a task of your own reads its settings: the producer, which
    # only validates send_email payloads, never needs the SMTP server.
    smtp_url = TaskSettings().smtp_url
    if smtp_url is None:
        raise NotConfigured("send_email needs CONVEYOR_SMTP_URL (smtp://user:pass@host:port)")
    import aiosmtplib  # only consumers that send mail pay for the import

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
