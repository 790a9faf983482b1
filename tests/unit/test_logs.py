"""Log lines: JSON objects carrying the task context; console lines readable."""

from __future__ import annotations

import logging

import orjson
import pytest

from conveyor.shared.logs import configure_logging, log_context


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_task_context(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    with log_context(task_id="t-1", task="echo", attempt=2):
        logging.getLogger("x").warning("task %s failed", "t-1")
    logging.getLogger("x").info("outside")
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["message"] == "task t-1 failed"
    assert (lines[0]["task_id"], lines[0]["task"], lines[0]["attempt"]) == ("t-1", "echo", 2)
    assert lines[0]["level"] == "warning"
    assert "task_id" not in lines[1]


def test_console_lines_show_context_as_key_values(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", "console")
    with log_context(task_id="t-9"):
        logging.getLogger("y").debug("hello")
    assert "hello task_id=t-9" in capsys.readouterr().err
