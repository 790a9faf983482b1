"""The raw ceiling consumer: aio-pika, prefetch=1, manual ack after a no-op, nothing more.

`python -m bench.raw_consumer --url URL --queue QUEUE --loop asyncio|uvloop`; SIGTERM stops
it. A message with `reply_to` gets one small completion message (its id) after the ack:
that is how the latency test sees raw tasks finish.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.common import LoopName, run_on


async def consume(url: str, queue_name: str) -> None:
    """Consume `queue_name` until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1)
        replies = await connection.channel(publisher_confirms=False)
        queue = await channel.get_queue(queue_name, ensure=False)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await message.ack()  # the task is a no-op
            if message.reply_to:
                done = aio_pika.Message(
                    body=(message.message_id or "").encode(),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                await replies.default_exchange.publish(done, routing_key=message.reply_to)

        await queue.consume(on_message)
        await stop.wait()
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    loop: LoopName = args.loop
    run_on(consume(args.url, args.queue), loop)


if __name__ == "__main__":
    main()
