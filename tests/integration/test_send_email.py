"""The send_email task against a real local SMTP server (aiosmtpd), and without one configured."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from conveyor.producer.submission.submitter import Submitter, TaskSubmission
from conveyor.shared.records import TaskStatus
from tests.support import EventLog, ServiceProcess, free_port


class Inbox:
    """An aiosmtpd handler that keeps every envelope it is given."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        parsed: list[EmailMessage] = []
        for envelope in self.envelopes:
            content: Any = envelope.original_content or envelope.content
            message = email.message_from_bytes(content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            parsed.append(message)
        return parsed


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on 127.0.0.1 and a free port; stopped after the test."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


async def test_send_email_delivers_the_mail_through_the_configured_smtp_server(
    smtp_server: tuple[Inbox, int],
    submitter: Submitter,
    events: EventLog,
    spawn: Callable[..., ServiceProcess],
) -> None:
    inbox, port = smtp_server
    spawn("consumer", smtp_url=f"smtp://127.0.0.1:{port}")
    payload = {
        "to": "alice@example.com",
        "subject": "Your report is ready",
        "body": "Hello Alice,\nthe report is attached.\n",
    }
    task = await submitter.submit(TaskSubmission(task="send_email", payload=payload))

    await events.wait_finished({task.id}, timeout_s=30)

    assert events.of_state(TaskStatus.FAILED) == []
    assert events.succeeded_count() == {task.id: 1}
    assert len(inbox.envelopes) == 1
    assert inbox.envelopes[0].rcpt_tos == ["alice@example.com"]
    mail = inbox.messages()[0]
    assert mail["To"] == "alice@example.com"
    assert mail["Subject"] == "Your report is ready"
    assert mail["Message-ID"] == f"<{task.id}@conveyor>"
    body = mail.get_body()
    assert body is not None
    # SMTP carries lines with CRLF endings.
    assert body.get_content().replace("\r\n", "\n") == "Hello Alice,\nthe report is attached.\n"
    [done] = events.of_state(TaskStatus.SUCCEEDED)
    assert done.result == {"to": "alice@example.com", "message_id": f"<{task.id}@conveyor>"}


async def test_send_email_without_smtp_url_fails_with_not_configured_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    submitter: Submitter,
    events: EventLog,
    spawn: Callable[..., ServiceProcess],
) -> None:
    monkeypatch.delenv("CONVEYOR_SMTP_URL", raising=False)
    spawn("consumer")
    task = await submitter.submit(
        TaskSubmission(
            task="send_email",
            payload={"to": "bob@example.com", "subject": "Hi", "body": "x"},
            max_retries=0,
        )
    )

    await events.wait_finished({task.id}, timeout_s=20)

    assert events.of_state(TaskStatus.SUCCEEDED) == []
    [failed] = events.of_state(TaskStatus.FAILED)
    assert failed.task_id == task.id
    assert failed.error is not None
    assert failed.error["type"] == "NotConfigured"
    assert "CONVEYOR_SMTP_URL" in failed.error["message"]
