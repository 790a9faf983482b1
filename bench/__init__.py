"""Benchmark of Conveyor against a minimal raw aio-pika pair: `python -m bench.run`."""
