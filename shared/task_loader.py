"""Loading the user's tasks: the modules CONVEYOR_TASKS names, imported by path.

Both services, the test harness and the CLI load tasks through here, so they agree on what
exists. A module is scanned for `@task` objects among its names (a task imported from another
module counts once); anything wrong stops the service at start with one line naming the
module, the task and the reason.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from conveyor.config.loader import EXIT_BAD_CONFIG
from conveyor.config.tasks import TaskSettings
from conveyor.shared.catalog import DEFAULT_QUEUE, Catalog
from conveyor.shared.errors import ConveyorError
from conveyor.shared.tasks import Task, TaskDefinitionError

TEST_TASKS_MODULE = "conveyor.test_tasks"


class TaskLoadError(ConveyorError):
    """A task module cannot be imported or defines a task badly; the message says which."""


@dataclass(frozen=True, slots=True)
class TaskDefaults:
    """Options of tasks that set none themselves (CONVEYOR_DEFAULT_QUEUE and the others)."""

    queue: str = DEFAULT_QUEUE
    max_retries: int = 3
    timeout_s: float = 300.0


def load_tasks(modules: Iterable[str]) -> dict[str, Task]:
    """Every task of `modules` by name; TaskLoadError for a module that does not import,
    defines no task, or two tasks of one name."""
    found: dict[str, tuple[Task, str]] = {}
    for module_name in modules:
        for task in _tasks_of(module_name):
            earlier = found.get(task.name)
            if earlier is not None and earlier[0] is not task:
                raise TaskLoadError(
                    f"CONVEYOR_TASKS: module {module_name!r}: task {task.name!r} is defined "
                    f"twice: {_where(earlier[0])} and {_where(task)}"
                )
            found[task.name] = (task, module_name)
    return {name: task for name, (task, _) in found.items()}


def catalog_of(tasks: Mapping[str, Task], defaults: TaskDefaults | None = None) -> Catalog:
    """The catalog of `tasks`, each option resolved once: the task's own, else the default."""
    defaults = defaults or TaskDefaults()
    return Catalog(
        task.spec(defaults.queue, defaults.max_retries, defaults.timeout_s)
        for task in tasks.values()
    )


def load_catalog(settings: TaskSettings) -> tuple[dict[str, Task], Catalog]:
    """The tasks a service serves (CONVEYOR_TASKS, plus the test-only ones when
    CONVEYOR_TEST_TASKS is on) and their catalog with the CONVEYOR_DEFAULT_* options."""
    modules = list(settings.tasks)
    if settings.test_tasks and TEST_TASKS_MODULE not in modules:
        modules.append(TEST_TASKS_MODULE)
    tasks = load_tasks(modules)
    defaults = TaskDefaults(
        settings.default_queue, settings.default_max_retries, settings.default_timeout_s
    )
    return tasks, catalog_of(tasks, defaults)


def load_catalog_or_exit(settings: TaskSettings) -> tuple[dict[str, Task], Catalog]:
    """load_catalog for a service's start: a bad task module prints one line, exit code 2."""
    try:
        return load_catalog(settings)
    except TaskLoadError as error:
        print(f"conveyor: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None


def _tasks_of(module_name: str) -> list[Task]:
    try:
        module = importlib.import_module(module_name)
    except TaskDefinitionError as error:
        raise TaskLoadError(f"CONVEYOR_TASKS: module {module_name!r}: {error}") from None
    except Exception as error:
        where = traceback.extract_tb(error.__traceback__)[-1]
        raise TaskLoadError(
            f"CONVEYOR_TASKS: cannot import module {module_name!r}: "
            f"{type(error).__name__}: {error} ({where.filename}:{where.lineno})"
        ) from None
    tasks = list(
        {id(value): value for value in vars(module).values() if isinstance(value, Task)}.values()
    )
    if not tasks:
        raise TaskLoadError(
            f"CONVEYOR_TASKS: module {module_name!r} defines no task (decorate functions "
            "with @conveyor.task)"
        )
    return tasks


def _where(task: Task) -> str:
    return f"{task.fn.__module__}.{task.fn.__qualname__}"
