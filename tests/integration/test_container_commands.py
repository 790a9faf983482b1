"""What the Dockerfile and compose.yaml run, run here outside a container (no Docker engine)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from conveyor.config import ConsumerSettings, ProducerSettings
from tests.support import REPO, ServiceProcess, wait_until

DOCKERFILE = (REPO / "Dockerfile").read_text()
COMPOSE = (REPO / "compose.yaml").read_text()
SETTINGS = {f"CONVEYOR_{name.upper()}" for name in ConsumerSettings.model_fields} | {
    f"CONVEYOR_{name.upper()}" for name in ProducerSettings.model_fields
}


def _health(env: dict[str, str]) -> int:
    return subprocess.run(
        [sys.executable, "-m", "conveyor.shared.health"], env=env, timeout=30, capture_output=True
    ).returncode


def test_every_conveyor_variable_in_dockerfile_and_compose_is_a_real_setting() -> None:
    used = set(re.findall(r"CONVEYOR_[A-Z_]+", DOCKERFILE + COMPOSE))
    # CONVEYOR_X_FILE reads setting X from a file (compose secrets).
    used = {u.removesuffix("_FILE") if u.removesuffix("_FILE") in SETTINGS else u for u in used}
    assert used and used <= SETTINGS, used - SETTINGS


def test_container_commands_are_the_service_modules() -> None:
    commands = re.findall(r'command: \["python", "-m", "conveyor\.(\w+)"\]', COMPOSE)
    assert sorted(commands) == ["consumer", "producer"]
    assert 'CMD ["python", "-m", "conveyor.producer"]' in DOCKERFILE
    assert 'CMD ["python", "-m", "conveyor.shared.health"]' in DOCKERFILE
    assert re.search(r"deploy:\s+replicas: 3", COMPOSE)


def test_wheel_the_image_installs_holds_all_packages_and_the_cli(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("conveyor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # One import name: nothing but conveyor/ and its dist-info at the top of the wheel.
    assert {name.split("/")[0] for name in names} == {
        "conveyor",
        f"{wheel.name.split('-py')[0]}.dist-info",
    }
    for module in ("producer/__main__.py", "consumer/__main__.py", "shared/health.py"):
        assert f"conveyor/{module}" in names
    assert "conveyor/config/__init__.py" in names and "conveyor/shared/py.typed" in names
    for asset in ("index.html", "dashboard.js", "dashboard.css"):  # the dashboard
        assert f"conveyor/producer/http/static/{asset}" in names
    # Every module of the source folders is in the wheel (a subpackage cannot be forgotten).
    for folder in ("producer", "consumer", "shared", "config"):
        for path in (REPO / folder).rglob("*.py"):
            assert f"conveyor/{path.relative_to(REPO).as_posix()}" in names, path
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "conveyor = conveyor.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


async def test_healthcheck_passes_while_the_consumer_runs_and_fails_after(
    spawn: Callable[..., ServiceProcess], tmp_path: Path, amqp_url: str, namespace: str
) -> None:
    alive = tmp_path / "alive"
    consumer = spawn("consumer", health_file=alive)
    env = {"PATH": "/usr/bin:/bin", "CONVEYOR_HEALTH_FILE": str(alive)}
    await wait_until(lambda: _health(env) == 0, 30, "the healthcheck to pass")
    consumer.signal(signal.SIGTERM)
    assert await consumer.wait(30) == 0
    assert _health(env) == 1
