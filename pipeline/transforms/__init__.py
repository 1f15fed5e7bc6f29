"""Per-batch transforms of every job kind, run by the one shard engine (``pipeline.engine``)."""
