"""From a submission to a confirmed message: validation and the outbox (`submitter`), shared
transactions for concurrent single submissions (`group_commit`), publishing with confirms
(`publisher`), and the published marks written off the request's path (`outbox`)."""
