"""What the services and the client share: the task catalog and `@task`, the wire format
(envelope, wire, rpc), the topology, status events, records and errors.

Import from the submodules (`conveyor.shared.envelope`, ...): this package root imports
nothing, so importing one of them does not load the rest (pydantic models, aio-pika).
"""

__all__: list[str] = []
