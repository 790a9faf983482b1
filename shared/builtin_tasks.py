"""Payload models of the built-in tasks, used by the demo, the tests and the benchmarks.

Adding a task type: a payload model and a TaskSpec here (or in your own module passed to
Catalog), plus a handler of the same name in consumer/handlers.py.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from conveyor.shared.catalog import Catalog, TaskSpec


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


class CrashPayload(StrictPayload):
    exit_code: int = Field(default=1, ge=0, le=255)


BUILTIN_TASKS = (
    TaskSpec("echo", EchoPayload, description="Returns its payload."),
    TaskSpec("sleep", SleepPayload, description="Sleeps `seconds` on the event loop."),
    TaskSpec("fail", FailPayload, description="Raises `message`; succeeds after `times` fails."),
    TaskSpec("cpu", CpuPayload, description="Busy-loops `ms` milliseconds off the event loop."),
    TaskSpec("send_email", SendEmailPayload, description="Sends an email through SMTP."),
)
TEST_TASKS = (
    TaskSpec("crash", CrashPayload, max_retries=0, description="Kills its consumer (os._exit)."),
)


def builtin_catalog(test_tasks: bool = False) -> Catalog:
    """The catalog of built-in tasks; `crash` only when test tasks are switched on."""
    return Catalog(BUILTIN_TASKS + (TEST_TASKS if test_tasks else ()))
