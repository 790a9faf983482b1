"""The schedules file (CONVEYOR_SCHEDULES_FILE): schedules defined beside the deployment.

TOML, or YAML for a name ending in .yaml or .yml; one table per schedule name with the
fields of `PUT /schedules/{name}`:

    [nightly-report]
    cron = "0 0 1 * * *"          # 6 fields, seconds first: every day at 01:00:00
    timezone = "Europe/Berlin"
    task = "echo"
    payload = {report = "nightly"}
    misfire = "once"

Read and checked once at start, before anything connects: a bad file stops the producer
with one line naming the schedule and the field, exit code 2, like a bad setting does.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from conveyor.config import EXIT_BAD_CONFIG
from conveyor.producer.scheduling.schedules import NAME_PATTERN, ScheduleDefinition, check_task
from conveyor.shared.catalog import Catalog
from conveyor.shared.errors import InvalidPayload, ScheduleFileError, SubmissionError

YAML_SUFFIXES = (".yaml", ".yml")


def read_schedules_file(
    path: Path, catalog: Catalog, queues: Collection[str]
) -> dict[str, ScheduleDefinition]:
    """The schedules `path` defines, each checked like a PUT of it would be; otherwise
    ScheduleFileError naming the schedule and the field."""
    where = f"CONVEYOR_SCHEDULES_FILE {path}"
    tables = _parse(path, where)
    known_queues = frozenset(queues) | catalog.queues
    definitions = {}
    for name, table in tables.items():
        if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
            raise ScheduleFileError(
                f"{where}: schedule name {name!r} must be letters, digits, '_', '.' or '-' "
                "(at most 150, starting with a letter or digit)"
            )
        try:
            definition = ScheduleDefinition.model_validate(table)
            check_task(definition, catalog, known_queues)
        except ValidationError as error:
            item = error.errors()[0]
            field = ".".join(str(part) for part in item["loc"]) or "schedule"
            message = item["msg"].removeprefix("Value error, ")
            raise ScheduleFileError(f"{where}: schedule {name!r}: {field}: {message}") from None
        except InvalidPayload as error:
            problems = "; ".join(f"{field}: {message}" for field, message, _ in error.errors)
            raise ScheduleFileError(f"{where}: schedule {name!r}: {problems}") from None
        except SubmissionError as error:
            raise ScheduleFileError(
                f"{where}: schedule {name!r}: {error.field}: {error.message}"
            ) from None
        definitions[name] = definition
    return definitions


def _parse(path: Path, where: str) -> dict[Any, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ScheduleFileError(f"{where}: cannot read it: {error}") from None
    try:
        if path.suffix.lower() in YAML_SUFFIXES:
            tables = yaml.safe_load(text) or {}
        else:
            tables = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        message = " ".join(str(error).split())
        raise ScheduleFileError(f"{where}: not valid {_format(path)}: {message}") from None
    if not isinstance(tables, dict):
        raise ScheduleFileError(f"{where}: expected one table per schedule name at the top")
    return tables


def _format(path: Path) -> str:
    return "YAML" if path.suffix.lower() in YAML_SUFFIXES else "TOML"


def load_schedules_file(
    path: Path | None, catalog: Catalog, queues: Collection[str]
) -> dict[str, ScheduleDefinition] | None:
    """The file's schedules (None without a file), or print why not and exit with code 2."""
    if path is None:
        return None
    try:
        return read_schedules_file(path, catalog, queues)
    except ScheduleFileError as error:
        print(f"conveyor: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
