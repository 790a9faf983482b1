"""Dead letters: `{ns}.dead` drained into a table (`keeper`, `store`), requeued and purged
(`desk`), over HTTP (`api`).

Its HTTP routes live here (`api`): they are a thin shell over `desk` and `store`, and a change
to dead letters then stays in this folder.
"""
