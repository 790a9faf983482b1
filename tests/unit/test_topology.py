"""Every queue the topology declares is durable and of the work queues' type: in a cluster a
classic queue lives on one node, and while that node is down no reconnecting channel that
declared it can come back (the producer's recorder and run checks went with it)."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.shared.topology import QueueType, Topology, declare_topology


class _Declared:
    async def bind(self, *_: Any, **__: Any) -> None:
        return None


class RecordingChannel:
    """Stands in for an aio-pika channel: keeps each queue declaration's keyword arguments."""

    def __init__(self) -> None:
        self.queues: dict[str, dict[str, Any]] = {}
        self.exchanges: list[str] = []

    async def declare_exchange(self, name: str, *_: Any, **__: Any) -> _Declared:
        self.exchanges.append(name)
        return _Declared()

    async def declare_queue(self, name: str, **kwargs: Any) -> _Declared:
        self.queues[name] = kwargs
        return _Declared()


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_every_declared_queue_is_durable_and_of_the_configured_type(
    queue_type: QueueType,
) -> None:
    topology = Topology("ns", queue_type=queue_type)
    channel = RecordingChannel()
    await declare_topology(channel, topology, ["default", "emails"])  # type: ignore[arg-type]
    expected = {
        topology.dead_letter_queue,
        topology.recorder_queue,
        topology.checks_queue,
        topology.workers_queue,
        topology.work_queue("default"),
        topology.work_queue("emails"),
    }
    # service_queues names them all but the work queues: what cleaning up a namespace deletes.
    assert set(topology.service_queues) == expected - {
        topology.work_queue("default"),
        topology.work_queue("emails"),
    }
    assert set(channel.queues) == expected
    for name, kwargs in channel.queues.items():
        assert kwargs.get("durable") is True, name
        assert kwargs["arguments"]["x-queue-type"] == queue_type, name


def test_the_run_checks_and_heartbeats_queues_took_new_names_with_their_new_type() -> None:
    # Re-declaring the old classic queues as quorum ones would be refused (PRECONDITION_FAILED).
    topology = Topology("ns")
    assert (topology.checks_queue, topology.workers_queue) == ("ns.run-checks", "ns.heartbeats")


async def test_topology_exchanges_names_every_exchange_it_declares() -> None:
    # Deleting a namespace (the demo's and the tests' cleanup) walks `exchanges`.
    topology = Topology("ns")
    channel = RecordingChannel()
    await declare_topology(channel, topology, ["default"])  # type: ignore[arg-type]
    assert sorted(channel.exchanges) == sorted(topology.exchanges)
