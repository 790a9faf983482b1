"""The installed package: one import name, a light public face, services that start from
any directory and stop at once on a bad CONVEYOR_TASKS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import conveyor


def _python(code: str, cwd: Path | str = "/", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_the_public_face_lists_what_users_need() -> None:
    for name in (
        "task", "TaskContext", "Retry", "PermanentFailure", "ConveyorClient",
        "SyncConveyorClient", "TaskRecord", "InvalidRequest", "TaskNotFound", "Unauthorized",
        "ServiceUnavailable", "Conflict", "RateLimited", "ApiError",
    ):  # fmt: skip
        assert name in conveyor.__all__ and hasattr(conveyor, name), name


def test_importing_the_client_imports_no_service_code() -> None:
    run = _python(
        "import sys\nfrom conveyor import ConveyorClient, task\n"
        "print(sorted(m for m in ('sqlalchemy', 'aio_pika', 'aiormq', 'fastapi', 'uvicorn',"
        " 'conveyor.producer', 'conveyor.consumer') if m in sys.modules))"
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_generic_names_are_not_importable_from_the_install() -> None:
    run = _python(
        "import importlib.util as u; print([u.find_spec(n) for n in "
        "('producer', 'consumer', 'shared', 'config')])"
    )
    assert run.stdout.strip() == "[None, None, None, None]", run.stderr


@pytest.mark.parametrize("service", ["producer", "consumer"])
@pytest.mark.parametrize(
    ("tasks", "says"),
    [
        ("no_such_module", "cannot import module 'no_such_module': ModuleNotFoundError"),
        ("json", "module 'json' defines no task"),
        ("bad name!", "CONVEYOR_TASKS"),
    ],
)
def test_a_bad_task_module_stops_the_service_with_exit_2_and_one_line(
    service: str, tasks: str, says: str, tmp_path: Path
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", f"conveyor.{service}"],
        env={"PATH": "/usr/bin:/bin", "CONVEYOR_TASKS": tasks,
             "CONVEYOR_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("conveyor: ") and says in lines[0], lines


@pytest.mark.parametrize("service", ["producer", "consumer"])
def test_the_cli_starts_each_service(service: str, tmp_path: Path) -> None:
    """`conveyor producer|consumer` runs the service itself (a bad CONVEYOR_TASKS proves it:
    the service's own start-up check answers)."""
    run = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", service],
        env={"PATH": "/usr/bin:/bin", "CONVEYOR_TASKS": "no_such_module"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 2 and "cannot import module 'no_such_module'" in run.stderr
