"""What the services and the client share: the task catalog and `@task`, the wire format,
the topology, status events, records and errors. Import from the submodules."""
