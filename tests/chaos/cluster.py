"""A 3-node RabbitMQ cluster of a test's own: spare ports, a name and a folder per node,
joined with `rabbitmqctl join_cluster`, torn down by its own node names (never the shared
broker). A node is SIGKILLed like a crash and started again under its old name, and rejoins.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from tests.support import RabbitNode


class RabbitCluster:
    """`size` private RabbitMQ nodes clustered together; `urls` lists their AMQP URLs."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = [RabbitNode() for _ in range(size)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def amqp_url(self) -> str:
        """All nodes as one CONVEYOR_AMQP_URL."""
        return ",".join(self.urls)

    def start(self) -> None:
        """Boot every node (side by side: about 10 s), then join the others to the first."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.start(timeout_s=90), self.nodes))
        first = self.nodes[0].name
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first)
            node.ctl("start_app")
            node.ctl("await_startup", "--timeout", "60")
        running = self.running_nodes()
        if sorted(running) != sorted(node.name for node in self.nodes):
            raise AssertionError(f"cluster formed with {running}")

    def running_nodes(self, via: RabbitNode | None = None) -> list[str]:
        """Names of the cluster's running nodes, as `via` (default: the first) sees them."""
        status = json.loads((via or self.nodes[0]).ctl("cluster_status", "--formatter", "json"))
        return list(status["running_nodes"])

    def node_named(self, name: str) -> RabbitNode:
        [node] = [node for node in self.nodes if node.name == name]
        return node

    def alive(self) -> list[RabbitNode]:
        return [node for node in self.nodes if node.is_running()]

    def queue_leader(self, queue: str) -> RabbitNode:
        """The node that leads quorum queue `queue` now (asked of a running node)."""
        via = self.alive()[0]
        rows = json.loads(via.ctl("list_queues", "name", "leader", "--formatter", "json"))
        [leader] = [row["leader"] for row in rows if row["name"] == queue]
        return self.node_named(leader)

    def queue_members(self, queue: str) -> list[str]:
        via = self.alive()[0]
        rows = json.loads(via.ctl("list_queues", "name", "members", "--formatter", "json"))
        [members] = [row["members"] for row in rows if row["name"] == queue]
        return list(members)

    def connection_names(self, node: RabbitNode) -> list[str]:
        """The `connection_name` of every client connection to `node`."""
        rows = json.loads(node.ctl("list_connections", "client_properties", "--formatter", "json"))
        names = []
        for row in rows:
            properties = row["client_properties"]
            if isinstance(properties, dict):
                names.append(str(properties.get("connection_name", "")))
            else:  # a list of [key, type, value] triples
                names += [str(p[2]) for p in properties if p[0] == "connection_name"]
        return names

    def kill(self, node: RabbitNode, timeout_s: float = 30) -> None:
        """SIGKILL `node` and wait until its VM is gone."""
        pid = node.kill()
        deadline = time.monotonic() + timeout_s
        while os.path.exists(f"/proc/{pid}"):
            if time.monotonic() > deadline:
                raise AssertionError(f"node {node.name} (pid {pid}) survived SIGKILL")
            time.sleep(0.05)

    def restart(self, node: RabbitNode) -> None:
        """Start a killed node again under its name; it rejoins the cluster."""
        node.start(timeout_s=90)
        node.ctl("await_startup", "--timeout", "60")

    def destroy(self) -> None:
        """Stop every node by its name (a node that will not stop is killed), remove folders."""
        for node in self.nodes:
            try:
                node.ctl("stop", timeout_s=60)
            except Exception:
                try:
                    node.kill()
                except (OSError, ValueError):
                    pass  # not running (no pid file, or its VM is gone)
            node.destroy()


@contextmanager
def rabbit_cluster(size: int = 3) -> Iterator[RabbitCluster]:
    cluster = RabbitCluster(size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
