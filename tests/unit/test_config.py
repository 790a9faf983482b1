"""Settings: defaults, env parsing, secret files, and the one-line exit on bad values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from conveyor.config import ConsumerSettings, ProducerSettings, redact_url

SECRET_URL = "amqp://app:s3cr3t-pw@rabbit.example:5672/vhost"


def test_defaults_match_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")  # no .env file around
    settings = ConsumerSettings()
    assert settings.amqp_url.get_secret_value() == "amqp://guest:guest@localhost:5672/"
    assert settings.namespace == "conveyor"
    assert settings.queue_type == "quorum"
    assert (settings.prefetch, settings.concurrency) == (1, 1)
    assert settings.queues == ["default"]
    assert settings.log_format == "console" and settings.log_level == "INFO"
    assert ProducerSettings().http_port == 8000


def test_env_vars_with_the_conveyor_prefix_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_QUEUES", "emails, reports")
    monkeypatch.setenv("CONVEYOR_CONCURRENCY", "4")
    monkeypatch.setenv("CONVEYOR_LOG_LEVEL", "debug")
    monkeypatch.setenv("CONVEYOR_QUEUE_TYPE", "classic")
    settings = ConsumerSettings()
    assert settings.queues == ["emails", "reports"]
    assert settings.concurrency == 4
    assert settings.log_level == "DEBUG"
    assert settings.queue_type == "classic"


def test_secret_is_read_from_a_file_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "amqp_url"
    secret.write_text(SECRET_URL + "\n")
    monkeypatch.setenv("CONVEYOR_AMQP_URL_FILE", str(secret))
    assert ConsumerSettings().amqp_url.get_secret_value() == SECRET_URL


def test_secret_is_read_from_the_secrets_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "CONVEYOR_AMQP_URL").write_text(SECRET_URL)
    monkeypatch.setenv("CONVEYOR_SECRETS_DIR", str(tmp_path))
    assert ConsumerSettings().amqp_url.get_secret_value() == SECRET_URL
    monkeypatch.setenv("CONVEYOR_AMQP_URL", "amqp://env-wins/")
    assert ConsumerSettings().amqp_url.get_secret_value() == "amqp://env-wins/"


def test_dotenv_file_in_the_working_directory_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("CONVEYOR_NAMESPACE=from-dotenv\n")
    monkeypatch.chdir(tmp_path)
    assert ConsumerSettings().namespace == "from-dotenv"


def test_reserved_queue_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_QUEUES", "default,dead")
    with pytest.raises(ValueError, match="reserved"):
        ConsumerSettings()


def test_redact_url_hides_the_password_only() -> None:
    assert redact_url(SECRET_URL) == "amqp://app:***@rabbit.example:5672/vhost"
    assert redact_url(SecretStr("amqp://localhost/")) == "amqp://localhost/"
    assert "s3cr3t" not in repr(ConsumerSettings(amqp_url=SECRET_URL))


def _start(module: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"conveyor.{module}"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )


@pytest.mark.parametrize("module", ["consumer", "producer"])
def test_bad_value_stops_the_service_with_one_line_and_exit_code_2(module: str) -> None:
    done = _start(module, CONVEYOR_PREFETCH="zero", CONVEYOR_HTTP_PORT="zero")
    assert done.returncode == 2
    variable = "CONVEYOR_PREFETCH" if module == "consumer" else "CONVEYOR_HTTP_PORT"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert variable in lines[0] and "'zero'" in lines[0]
    assert "allowed: an integer" in lines[0]
    assert "Traceback" not in done.stderr


def test_bad_choice_names_the_allowed_values() -> None:
    done = _start("consumer", CONVEYOR_QUEUE_TYPE="lazy")
    assert done.returncode == 2
    assert "CONVEYOR_QUEUE_TYPE" in done.stderr and "one of quorum, classic" in done.stderr


def test_bad_amqp_url_is_reported_without_printing_it() -> None:
    done = _start("consumer", CONVEYOR_AMQP_URL="http://user:hunter2@host/")
    assert done.returncode == 2
    assert "CONVEYOR_AMQP_URL" in done.stderr and "amqp://" in done.stderr
    assert "hunter2" not in done.stderr


def test_unreadable_secret_file_exits_2() -> None:
    done = _start("consumer", CONVEYOR_AMQP_URL_FILE="/nonexistent/secret")
    assert done.returncode == 2
    assert "/nonexistent/secret" in done.stderr and "Traceback" not in done.stderr
