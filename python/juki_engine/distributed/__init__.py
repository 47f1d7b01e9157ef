"""The registry past one machine: shards of it served by Ray actors behind one front end
(docs/sharding.md). `shard` splits a registry into a shard directory; `ShardedRegistry` serves
one with the read API of `Registry`."""

from juki_engine.distributed.cluster import ShardedRegistry, ShardUnavailable
from juki_engine.distributed.shards import Routes, ShardError, ShardSet, shard

__all__ = ["Routes", "ShardError", "ShardSet", "ShardUnavailable", "ShardedRegistry", "shard"]
