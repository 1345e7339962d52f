"""The Lua scripts the worker runs in Redis: each handles a whole batch in one command.

A pipeline of plain commands costs the worker ~17 µs of client CPU per command (redis-py
builds and parses each one); a batch of 32 results was 96 commands. A script takes the
batch's keys and values in one ``EVALSHA`` and runs the same commands inside Redis, so the
worker's cost per request falls to a few µs (``ops/bench/echo_throughput.py``). Each
script does exactly what the plain commands did, key by key, and Redis runs a script
atomically. Keys are passed as ``KEYS`` so ACL key patterns still apply.

A batch's keys span many hash slots, so these scripts need a single Redis primary
(standalone or Sentinel-managed), not Redis Cluster.
"""

from __future__ import annotations

#: KEYS = the result key of each of n results, then the attempts keys to delete;
#: ARGV = ttl_s, n, then each result's encoded value, then each result's done channel.
#: Returns how many results were new.
STORE_RESULTS = """
local ttl = ARGV[1]
local n = tonumber(ARGV[2])
local written = 0
for i = 1, n do
  if redis.call('SET', KEYS[i], ARGV[2 + i], 'NX', 'EX', ttl) then
    written = written + 1
  end
  redis.call('PUBLISH', ARGV[2 + n + i], '1')
end
for i = n + 1, #KEYS do
  redis.call('DEL', KEYS[i])
end
return written
"""

#: KEYS = n 'accepted' keys, then attempts keys to decrement; ARGV = ttl_s, n.
#: Returns nothing.
MARK_ACCEPTED = """
local n = tonumber(ARGV[2])
for i = 1, n do
  redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1])
end
for i = n + 1, #KEYS do
  if redis.call('DECR', KEYS[i]) <= 0 then
    redis.call('DEL', KEYS[i])
  end
end
return 0
"""

#: KEYS = one attempts key per record; ARGV = delta, ttl_s. Returns each new count.
COUNT_ATTEMPTS = """
local counts = {}
for i = 1, #KEYS do
  counts[i] = redis.call('INCRBY', KEYS[i], ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return counts
"""
