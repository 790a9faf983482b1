"""The producer's side of tasks being run by consumers: their status events applied to the
store (`recorder`), long-polling clients woken when a task finishes (`waiters`), consumers'
"may I run this?" answered (`checks`), and cancellations told to every consumer
(`cancellation`)."""
