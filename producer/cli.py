"""The `conveyor` command: run the services, submit a task, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import orjson

from config import ProducerSettings, load_settings, redact_url
from producer.service import open_submitter
from producer.submission import TaskSubmission
from shared.errors import BrokerUnavailable, ConveyorError, SubmissionError
from shared.logs import configure_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conveyor",
        description="Conveyor: a RabbitMQ work queue. Settings come from CONVEYOR_* variables.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("producer", help="run the producer service (HTTP API)")
    commands.add_parser("consumer", help="run a consumer process")
    submit = commands.add_parser("submit", help="publish one task and print its id")
    submit.add_argument("task", help="task name, e.g. echo")
    submit.add_argument("--payload", default="{}", help="the payload as a JSON object")
    submit.add_argument("--queue", default=None, help="work queue (default: the task's own)")
    demo = commands.add_parser("demo", help="producer + 3 consumers + a few hundred tasks")
    demo.add_argument("--tasks", type=int, default=300, help="how many tasks (default 300)")
    demo.add_argument("--consumers", type=int, default=3, help="consumer processes (default 3)")
    return parser


CONNECT_TIMEOUT_S = 5.0


async def _submit(settings: ProducerSettings, submission: TaskSubmission) -> str:
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S + settings.publish_timeout_s):
            async with open_submitter(settings) as submitter:
                return (await submitter.submit(submission)).id
    except TimeoutError:
        raise BrokerUnavailable(
            f"RabbitMQ at {redact_url(settings.amqp_url)} did not answer in time"
        ) from None


def _run_submit(args: argparse.Namespace) -> int:
    try:
        payload = orjson.loads(args.payload)
    except orjson.JSONDecodeError as error:
        print(f"conveyor: --payload is not valid JSON: {error}", file=sys.stderr)
        return 2
    settings = load_settings(ProducerSettings)
    # The CLI reports one line itself; the client library's reconnect chatter is noise here.
    configure_logging("CRITICAL", "console")
    try:
        submission = TaskSubmission(task=args.task, payload=payload, queue=args.queue)
        print(asyncio.run(_submit(settings, submission)))
    except SubmissionError as error:
        print(f"conveyor: {error.field}: {error.message}", file=sys.stderr)
        return 2
    except (ConveyorError, ValueError) as error:
        print(f"conveyor: {error or type(error).__name__}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `conveyor` console script."""
    args = _parser().parse_args(argv)
    if args.command == "producer":
        from producer.main import main as run_producer

        run_producer()
    elif args.command == "consumer":
        # The consumer is its own program (producer and consumer never import each other);
        # exec keeps one process, so signals reach it directly.
        os.execv(sys.executable, [sys.executable, "-m", "consumer"])
    elif args.command == "submit":
        raise SystemExit(_run_submit(args))
    elif args.command == "demo":
        from producer.demo import run_demo

        raise SystemExit(run_demo(args.tasks, args.consumers))


if __name__ == "__main__":
    main()
