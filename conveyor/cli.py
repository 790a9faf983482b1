"""The `conveyor` command: run the services and the demo, and use the HTTP API.

`submit`, `status`, `tasks`, `wait`, `dead-letters`, `requeue` and `purge-dead-letters` are
clients of the producer's HTTP API (CONVEYOR_API_URL, CONVEYOR_API_TOKEN): they need no
broker credentials, and they show the same records and errors as any other client of the API.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence

import httpx
import orjson

from conveyor import cli_render as render
from conveyor.client import Conflict, ConveyorClient, InvalidRequest, TaskNotFound
from conveyor.config import ClientSettings, load_settings
from conveyor.shared.errors import ConveyorError
from conveyor.shared.records import TaskRecord, TaskStatus

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
# Long-polls held open at once by `conveyor wait`: enough to be quick, few enough to be polite.
MAX_CONCURRENT_WAITS = 16


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conveyor",
        description="Conveyor: a RabbitMQ work queue. Settings come from CONVEYOR_* variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("producer", help="run the producer service (HTTP API)")
    commands.add_parser("consumer", help="run a consumer process")
    commands.add_parser("migrate", help="migrate the task database's schema, then exit")
    _add_api_commands(commands)
    demo = commands.add_parser("demo", help="producer + 3 consumers + a few hundred tasks")
    demo.add_argument("--tasks", type=int, default=300, help="how many tasks (default 300)")
    demo.add_argument("--consumers", type=int, default=3, help="consumer processes (default 3)")
    return parser


def _add_api_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    json_help = "print the record(s) as JSON instead of a table"
    submit = commands.add_parser("submit", help="submit one task and print its id")
    submit.add_argument("task", help="task name, e.g. echo")
    submit.add_argument("--payload", default="{}", help="the payload as a JSON object")
    submit.add_argument("--queue", help="work queue (default: the task's own)")
    submit.add_argument("--idempotency-key", help="resubmitting with this key returns the task")
    submit.add_argument("--max-retries", type=int, help="retries after a failed attempt")
    submit.add_argument("--timeout-s", type=float, help="time limit of one attempt, seconds")
    submit.add_argument("--delay-s", type=float, help="run no earlier than this from now")
    submit.add_argument("--wait", action="store_true", help="wait until it finished; show it")
    submit.add_argument("--json", action="store_true", help=json_help)

    cancel = commands.add_parser("cancel", help="cancel tasks that have not finished")
    cancel.add_argument("task_ids", nargs="+", metavar="ID", help="task id(s)")
    cancel.add_argument("--json", action="store_true", help=json_help)

    status = commands.add_parser("status", help="show one task's record")
    status.add_argument("task_id", metavar="ID", help="the task's id")
    status.add_argument("--json", action="store_true", help=json_help)

    tasks = commands.add_parser("tasks", help="list tasks, newest first")
    tasks.add_argument("--status", choices=[s.value for s in TaskStatus], help="only this status")
    tasks.add_argument("--task", help="only tasks of this name")
    tasks.add_argument("--limit", type=int, help="most tasks on the page")
    tasks.add_argument("--cursor", help="where the page starts (printed under the last page)")
    tasks.add_argument("--json", action="store_true", help=json_help)

    wait = commands.add_parser("wait", help="wait until tasks finished; exit 0 if all succeeded")
    wait.add_argument("task_ids", nargs="+", metavar="ID", help="the tasks' ids")
    wait.add_argument("--timeout-s", type=float, help="give up after this long (default: never)")
    wait.add_argument("--json", action="store_true", help=json_help)
    _add_dead_letter_commands(commands)


def _add_dead_letter_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    letters = commands.add_parser("dead-letters", help="list dead letters, newest first")
    letters.add_argument("--limit", type=int, help="most dead letters on the page")
    letters.add_argument("--cursor", help="where the page starts (printed under the last page)")
    letters.add_argument("--json", action="store_true", help="print the page as JSON")

    requeue = commands.add_parser("requeue", help="publish dead tasks again (fresh retries)")
    requeue.add_argument("task_ids", nargs="*", metavar="ID", help="the dead tasks' ids")
    requeue.add_argument("--all", action="store_true", help="every dead letter that is a task")
    requeue.add_argument("--json", action="store_true", help="print the outcome as JSON")

    task_types = commands.add_parser(
        "task-types", help="list the tasks the producer accepts and who serves them"
    )
    task_types.add_argument("--json", action="store_true", help="print them as JSON")

    workers = commands.add_parser("workers", help="list consumers: online, lost or offline")
    workers.add_argument("--json", action="store_true", help="print the workers as JSON")

    purge = commands.add_parser("purge-dead-letters", help="delete every dead letter for good")
    purge.add_argument("--yes", action="store_true", help="confirm: nothing is deleted without")
    purge.add_argument("--json", action="store_true", help="print the outcome as JSON")


def _exit_code(records: Sequence[TaskRecord]) -> int:
    """0 when every task succeeded; else 1, and one line on stderr saying which did not."""
    summary = render.unsuccessful_summary(records)
    if summary is None:
        return EXIT_OK
    print(f"conveyor: {summary}", file=sys.stderr)
    return EXIT_FAILED


async def _submit(client: ConveyorClient, args: argparse.Namespace) -> int:
    record = await client.submit(
        args.task,
        args.payload,
        queue=args.queue,
        idempotency_key=args.idempotency_key,
        max_retries=args.max_retries,
        timeout_s=args.timeout_s,
        delay_s=args.delay_s,
    )
    if args.wait:
        try:
            record = await client.wait(record.id)
        except asyncio.CancelledError:  # Ctrl-C: the task runs on; say how to find it
            print(f"conveyor: stopped waiting; task {record.id} was submitted", file=sys.stderr)
            raise
    if args.json:
        render.print_json(record.model_dump(mode="json"))
    elif args.wait:
        render.show_record(record)
    else:
        print(record.id)
    return _exit_code([record]) if args.wait else EXIT_OK


async def _cancel(client: ConveyorClient, args: argparse.Namespace) -> int:
    """Cancel each id; one line per id that could not be (finished already, unknown)."""
    cancelled, code = [], EXIT_OK
    for task_id in args.task_ids:
        try:
            cancelled.append(await client.cancel(task_id))
        except (TaskNotFound, Conflict) as error:
            print(f"conveyor: {error}", file=sys.stderr)
            code = EXIT_FAILED
    if args.json:
        render.print_json([record.model_dump(mode="json") for record in cancelled])
    else:
        for record in cancelled:
            print(f"{record.id} cancelled")
    return code


async def _status(client: ConveyorClient, args: argparse.Namespace) -> int:
    record = await client.get(args.task_id)
    if args.json:
        render.print_json(record.model_dump(mode="json"))
    else:
        render.show_record(record)
    return EXIT_OK


async def _tasks(client: ConveyorClient, args: argparse.Namespace) -> int:
    page = await client.list(args.status, args.task, args.limit, args.cursor)
    if args.json:
        render.print_json(page.model_dump(mode="json"))
        return EXIT_OK
    render.show_table(page.items)
    if page.next_cursor:
        filters = {"--status": args.status, "--task": args.task, "--limit": args.limit}
        argv = ["tasks"]
        for flag, value in filters.items():
            if value is not None:
                argv += [flag, str(value)]
        render.show_next_page_hint(argv, page.next_cursor)
    return EXIT_OK


async def _wait_all(
    client: ConveyorClient,
    task_ids: Sequence[str],
    timeout_s: float | None,
    on_terminal: Callable[[], None],
) -> list[TaskRecord]:
    """Each task's record once terminal or past the shared deadline, in the order given."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    slots = asyncio.Semaphore(MAX_CONCURRENT_WAITS)

    async def wait_one(task_id: str) -> TaskRecord:
        async with slots:
            left_s = None if deadline is None else max(deadline - loop.time(), 0.0)
            record = await client.wait(task_id, left_s)
        if record.status.terminal:
            on_terminal()
        return record

    try:
        async with asyncio.TaskGroup() as group:
            waits = [group.create_task(wait_one(task_id)) for task_id in task_ids]
    except ExceptionGroup as errors:
        # The first error says it all (an unknown id, the API gone); the rest were cancelled.
        raise errors.exceptions[0] from None
    return [wait.result() for wait in waits]


async def _wait(client: ConveyorClient, args: argparse.Namespace) -> int:
    task_ids = list(dict.fromkeys(args.task_ids))  # each once, in the order given
    with render.wait_progress(len(task_ids)) as advance:
        records = await _wait_all(client, task_ids, args.timeout_s, advance)
    if args.json:
        render.print_json(render.records_json(records))
    else:
        render.show_table(records)
    return _exit_code(records)


async def _dead_letters(client: ConveyorClient, args: argparse.Namespace) -> int:
    page = await client.dead_letters(args.limit, args.cursor)
    if args.json:
        render.print_json(page.model_dump(mode="json"))
        return EXIT_OK
    render.show_dead_letters(page.items)
    if page.next_cursor:
        argv = ["dead-letters"] + ([] if args.limit is None else ["--limit", str(args.limit)])
        render.show_next_page_hint(argv, page.next_cursor, "dead letters")
    return EXIT_OK


async def _requeue(client: ConveyorClient, args: argparse.Namespace) -> int:
    if args.all:
        outcome = await client.requeue_all()
        if args.json:
            render.print_json(outcome.model_dump(mode="json"))
        else:
            print(render.requeue_summary(outcome.requeued, outcome.skipped))
        return EXIT_OK
    records: list[TaskRecord] = []
    missed = 0
    for task_id in dict.fromkeys(args.task_ids):  # each once, in the order given
        try:
            records.append(await client.requeue(task_id))
        except (TaskNotFound, Conflict) as error:
            # One id that is not (or no longer) a dead letter must not stop the others.
            print(f"conveyor: {error}", file=sys.stderr)
            missed += 1
    if args.json:
        render.print_json(render.records_json(records))
    else:
        for record in records:
            print(record.id)
    return EXIT_FAILED if missed else EXIT_OK


async def _workers(client: ConveyorClient, args: argparse.Namespace) -> int:
    workers = await client.workers()
    if args.json:
        render.print_json([worker.model_dump(mode="json") for worker in workers])
    else:
        render.show_workers(workers)
    return EXIT_OK


async def _task_types(client: ConveyorClient, args: argparse.Namespace) -> int:
    task_types = await client.task_types()
    if args.json:
        render.print_json(
            {"items": [item.model_dump(mode="json") for item in task_types], "next_cursor": None}
        )
    else:
        render.show_task_types(task_types)
    return EXIT_OK


async def _purge_dead_letters(client: ConveyorClient, args: argparse.Namespace) -> int:
    purged = await client.purge_dead_letters()
    if args.json:
        render.print_json({"purged": purged})
    else:
        print(f"purged {purged} dead letter{'' if purged == 1 else 's'}")
    return EXIT_OK


Command = Callable[[ConveyorClient, argparse.Namespace], Awaitable[int]]
API_COMMANDS: dict[str, Command] = {
    "submit": _submit,
    "cancel": _cancel,
    "status": _status,
    "tasks": _tasks,
    "wait": _wait,
    "dead-letters": _dead_letters,
    "requeue": _requeue,
    "purge-dead-letters": _purge_dead_letters,
    "workers": _workers,
    "task-types": _task_types,
}


def _bad_input(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line before any request, or None."""
    if args.command == "submit":
        return _parse_payload(args)
    if args.command == "requeue" and args.all and args.task_ids:
        return "requeue takes dead tasks' ids or --all, not both"
    if args.command == "requeue" and not (args.all or args.task_ids):
        return "requeue needs dead tasks' ids (see conveyor dead-letters), or --all"
    if args.command == "purge-dead-letters" and not args.yes:
        return "purge-dead-letters deletes every dead letter for good; add --yes to do it"
    return None


def _parse_payload(args: argparse.Namespace) -> str | None:
    """Replace args.payload (JSON text) by the object it holds; or say what is wrong."""
    try:
        payload = orjson.loads(args.payload)
    except orjson.JSONDecodeError as error:
        return f"--payload is not valid JSON: {error}"
    if not isinstance(payload, dict):
        return "--payload must be a JSON object, e.g. '{\"seconds\": 1}'"
    args.payload = payload
    return None


async def _run_with_client(
    args: argparse.Namespace, transport: httpx.AsyncBaseTransport | None
) -> int:
    settings = load_settings(ClientSettings)
    async with ConveyorClient.from_settings(settings, transport=transport) as client:
        return await API_COMMANDS[args.command](client, args)


def _run_api_command(args: argparse.Namespace, transport: httpx.AsyncBaseTransport | None) -> int:
    """Run one API command; errors become one line on stderr and an exit code."""
    if problem := _bad_input(args):
        print(f"conveyor: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return asyncio.run(_run_with_client(args, transport))
    except InvalidRequest as error:
        problems = [f"{d.field}: {d.message}" if d.field else d.message for d in error.details]
        for problem in problems or [str(error)]:
            print(f"conveyor: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ConveyorError as error:
        print(f"conveyor: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def main(
    argv: Sequence[str] | None = None, *, transport: httpx.AsyncBaseTransport | None = None
) -> None:
    """Entry point of the `conveyor` console script.

    `transport` carries the API commands' HTTP requests (tests pass an httpx.MockTransport).
    """
    args = _parser().parse_args(argv)
    if args.command == "producer":
        from conveyor.producer.main import main as run_producer

        run_producer()
    elif args.command == "consumer":
        from conveyor.consumer.main import main as run_consumer

        run_consumer()
    elif args.command in API_COMMANDS:
        raise SystemExit(_run_api_command(args, transport))
    elif args.command == "migrate":
        from conveyor.producer.main import run_migrations

        raise SystemExit(run_migrations())
    elif args.command == "demo":
        from conveyor.demo import run_demo

        raise SystemExit(run_demo(args.tasks, args.consumers))


if __name__ == "__main__":
    main()
