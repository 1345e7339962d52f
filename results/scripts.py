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

#: KEYS = result key, attempts key (per request, in that order);
#: ARGV = ttl_s, then per request its encoded result and its done channel.
#: Returns how many results were new.
STORE_RESULTS = """
local ttl = ARGV[1]
local written = 0
for i = 1, #KEYS, 2 do
  if redis.call('SET', KEYS[i], ARGV[i + 1], 'NX', 'EX', ttl) then
    written = written + 1
  end
  redis.call('PUBLISH', ARGV[i + 2], '1')
  redis.call('DEL', KEYS[i + 1])
end
return written
"""

#: KEYS = one 'accepted' key per request; ARGV = ttl_s. Returns nothing.
MARK_ACCEPTED = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1])
end
return 0
"""

#: KEYS = one attempts key per request; ARGV = delta, ttl_s. Returns each new count.
COUNT_ATTEMPTS = """
local counts = {}
for i = 1, #KEYS do
  counts[i] = redis.call('INCRBY', KEYS[i], ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return counts
"""

#: KEYS = stream key, result key (per append, in that order);
#: ARGV = ttl_s, then per append: opening ("1"/"0"), worker id, entry count, then per entry
#: its field count (names and values) and the fields. An opening append of a request that
#: has a result appends nothing; one whose stream already exists appends a restart entry
#: first. Returns, per append, 1 if the request had a result (opening appends only).
APPEND_STREAMS = """
local ttl = ARGV[1]
local a = 2
local answered = {}
for i = 1, #KEYS, 2 do
  local stream, result = KEYS[i], KEYS[i + 1]
  local opening, worker, count = ARGV[a] == '1', ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  local has = 0
  if opening then
    if redis.call('EXISTS', result) == 1 then
      has = 1
    elseif redis.call('EXISTS', stream) == 1 then
      redis.call('XADD', stream, '*', 'type', 'restart', 'seq', '0', 'worker', worker)
    end
  end
  for _ = 1, count do
    local n = tonumber(ARGV[a])
    if has == 0 then
      redis.call('XADD', stream, '*', unpack(ARGV, a + 1, a + n))
    end
    a = a + n + 1
  end
  if has == 0 and count > 0 then
    redis.call('EXPIRE', stream, ttl)
  end
  answered[#answered + 1] = has
end
return answered
"""
