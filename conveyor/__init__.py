"""Conveyor: a RabbitMQ work queue with task records, schedules and a dashboard."""
