"""What the producer and the consumer share: catalog, envelope, topology, events, errors.

Import from the submodules (`conveyor.shared.envelope`, ...): this package root imports
nothing, so importing one of them does not load the rest (pydantic models, aio-pika).
"""

__all__: list[str] = []
