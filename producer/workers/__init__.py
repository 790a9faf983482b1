"""The worker registry: consumers' heartbeats consumed (`registry`) into a table (`store`),
read by `/workers`, `/task-types` and the gauges."""
