"""One task end to end on one worker (no Ray): transform a shard, invert or interpolate, score a shard."""
