"""The drivers of every job kind: plan, withdraw, run on the workers, merge, summarise."""
