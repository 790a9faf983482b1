"""The task database: its tables and migrations (`schema`), opening it (`database`), and every
query on task records, one module per concern that asks them, plus the upkeep that runs on it
(`maintenance`: the outbox sweeper and retention)."""
