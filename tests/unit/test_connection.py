"""Several broker nodes in CONVEYOR_AMQP_URL: parsing, where connections start, moving on to
the next node, quorum replication arguments, and passwords kept out of everything printed."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import pytest
from pydantic import ValidationError
from yarl import URL

from conveyor.config import BrokerSettings, describe_error, redact_url, split_amqp_urls
from conveyor.shared.connection import (
    MultiNodeConnection,
    NodeRotation,
    host_port,
    node_urls,
    nodes_from,
)
from conveyor.shared.topology import Topology

NODES = "amqp://app:pw-one@rabbit-0:5672/, amqp://app:pw-two@rabbit-1:5672/,amqp://rabbit-2/,"


def test_a_comma_separated_url_lists_every_node_in_order() -> None:
    assert split_amqp_urls(NODES) == [
        "amqp://app:pw-one@rabbit-0:5672/",
        "amqp://app:pw-two@rabbit-1:5672/",
        "amqp://rabbit-2/",
    ]
    settings = BrokerSettings(amqp_url=NODES)
    assert [host_port(url) for url in settings.amqp_urls()] == [
        "rabbit-0:5672",
        "rabbit-1:5672",
        "rabbit-2:5672",
    ]
    assert BrokerSettings(amqp_url="amqp://one/").amqp_urls() == ["amqp://one/"]


def test_a_bad_url_in_the_list_is_named_by_position_not_printed() -> None:
    with pytest.raises(ValidationError) as raised:
        BrokerSettings(amqp_url="amqp://a:pw-one@n0/,http://a:hunter2@n1/")
    line = describe_error(BrokerSettings, raised.value)
    assert "CONVEYOR_AMQP_URL" in line and "URL 2 of 2" in line
    assert "hunter2" not in line and "pw-one" not in line
    with pytest.raises(ValidationError):
        BrokerSettings(amqp_url=" , ")


def test_every_password_of_a_url_list_is_redacted() -> None:
    settings = BrokerSettings(amqp_url=NODES)
    shown = redact_url(settings.amqp_url)
    assert shown == (
        "amqp://app:***@rabbit-0:5672/,amqp://app:***@rabbit-1:5672/,amqp://rabbit-2/,"
    )
    assert "pw-" not in repr(settings) and "pw-" not in str(settings.amqp_url)


def test_connections_of_a_process_start_at_each_node_in_turn() -> None:
    rotation = NodeRotation()
    starts = [rotation.next_start(3) for _ in range(6)]
    assert Counter(starts) == {0: 2, 1: 2, 2: 2}  # spread, not all on the first node
    assert all((b - a) % 3 == 1 for a, b in itertools.pairwise(starts))
    assert NodeRotation(offset=4).next_start(3) == 1


def test_processes_start_at_random_nodes() -> None:
    # Replicas in containers share pid 1: the offset is random, so over 50 processes the
    # first connection does not always land on the same node.
    firsts = {NodeRotation().next_start(3) for _ in range(50)}
    assert len(firsts) > 1


def test_a_connection_tries_the_nodes_from_its_start_and_wraps_around() -> None:
    assert nodes_from(["a", "b", "c"], 1) == ["b", "c", "a"]
    assert nodes_from(["a", "b", "c"], 5) == ["c", "a", "b"]
    assert nodes_from(["a"], 7) == ["a"]


def test_every_node_url_carries_the_connection_parameters() -> None:
    settings = BrokerSettings(amqp_url=NODES, heartbeat_s=7, reconnect_interval_s=0.5)
    nodes = node_urls(settings, "conveyor consumer w1", start=1)
    assert [host_port(url) for url in nodes] == ["rabbit-1:5672", "rabbit-2:5672", "rabbit-0:5672"]
    for url in nodes:
        assert url.query["heartbeat"] == "7"  # aiormq reads these from the URL
        assert url.query["connection_name"] == "conveyor consumer w1"
        assert url.query["reconnect_interval"] == "0.5" and url.query["fail_fast"] == "0"
        assert "pw-" not in url.query_string  # no other node's URL ends up in the query
    assert nodes[0].password == "pw-two" and nodes[1].password is None


async def test_a_lost_or_failed_connection_moves_on_to_the_next_node() -> None:
    nodes = [URL(f"amqp://app:pw@node-{i}:5672/?heartbeat=5") for i in range(3)]
    connection = MultiNodeConnection(nodes)
    seen = [connection.node]
    for _ in range(4):
        closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        closing.set_exception(ConnectionRefusedError())
        await connection._on_connection_close(closing)
        seen.append(connection.node)
    assert seen == ["node-0:5672", "node-1:5672", "node-2:5672", "node-0:5672", "node-1:5672"]
    assert "pw" not in str(connection)  # aio-pika's own log lines censor the password
    await connection.close()


def test_quorum_work_queues_ask_for_3_replicas_unless_told_otherwise() -> None:
    arguments = Topology.of(BrokerSettings()).work_queue_arguments()
    assert arguments["x-quorum-initial-group-size"] == 3
    five = Topology.of(BrokerSettings(quorum_initial_group_size=5)).work_queue_arguments()
    assert five["x-quorum-initial-group-size"] == 5
    # 0: no argument, RabbitMQ's own default (a replica on every node), as before.
    unset = Topology("t", quorum_initial_group_size=0).work_queue_arguments()
    assert "x-quorum-initial-group-size" not in unset
    assert "x-quorum-initial-group-size" not in Topology("t", "classic").work_queue_arguments()


def test_an_error_quoting_a_url_list_is_redacted_node_by_node() -> None:
    from conveyor.config import redact_text

    text = "refused: 'amqp://a:pw1@h1:5672/,amqp://b:pw2@h2:5672' (and amqp://h3/)"
    shown = redact_text(text)
    assert "pw1" not in shown and "pw2" not in shown
    assert "amqp://a:***@h1:5672/" in shown and "amqp://b:***@h2:5672" in shown
