"""The Lua scripts of the Redis store: the changes to several keys that a MULTI/EXEC cannot make.

Each names every key it touches in KEYS, all of one store (one hash slot on
a cluster, see ``redis_keys``), so that it runs on the master holding them,
atomically, as on one server.
"""

from __future__ import annotations

__all__ = ["DROP_DANGLING", "QUARANTINE"]

# Drop the index rows of keys whose entry is gone, checking again inside the script
# so that an entry recorded meanwhile keeps its rows. KEYS: meta, lru, lfu, fifo, then
# the entries' names; ARGV: the keys, in the same order as their names.
DROP_DANGLING = """
local dropped = 0
for i = 1, #ARGV do
  local k = ARGV[i]
  if redis.call('EXISTS', KEYS[4 + i]) == 0 then
    redis.call('HDEL', KEYS[1], k)
    redis.call('ZREM', KEYS[2], k)
    redis.call('ZREM', KEYS[3], k)
    redis.call('ZREM', KEYS[4], k)
    dropped = dropped + 1
  end
end
return dropped
"""

# Move an entry aside (keeping its expiry) and drop its index rows, at once: a cluster's
# MULTI/EXEC may not RENAME. 0 when there was no entry (its rows are dropped all the same).
# KEYS: the entry, where it goes, meta, lru, lfu, fifo; ARGV: the key.
QUARANTINE = """
local moved = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  moved = 1
end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
return moved
"""
