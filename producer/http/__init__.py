"""The HTTP face of the producer: the FastAPI app and its task routes (`app`), the middleware
in front of every route (`guards`), the one mapping of errors to responses (`errors`), the
task catalog's routes and OpenAPI document (`task_types`) and the dashboard page (`dashboard`,
files in `static/`).

Routes that belong to one concern live in that concern's package (`scheduling.api`,
`dead_letters.api`, `monitoring.api`), beside the code they are a thin shell over: a change to
schedules or dead letters stays in one folder. `app` includes them all.
"""
