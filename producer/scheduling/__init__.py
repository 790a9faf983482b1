"""Tasks that run later: cron schedules (`schedules`: definitions and run times, pure; `store`,
`file`: where they are kept; `desk`, `api`: what the HTTP API does with them), the scheduler
that fires them on one elected replica (`scheduler`, `leader`), and delayed tasks published
when due (`delays`).

Its HTTP routes live here (`api`): they are a thin shell over `desk`, and a change to
schedules then stays in this folder.
"""
