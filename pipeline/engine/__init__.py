"""The one shard engine every job kind runs through: tasks, sources, sinks, overlap, completion."""
