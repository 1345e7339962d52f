"""The Lua scripts the worker runs in Redis: each handles a whole batch in one command.

A pipeline of plain commands costs the worker ~17 µs of client CPU per command (redis-py
builds and parses each one); a batch of 32 results was 96 commands. A script takes the
batch's keys and values in one ``EVALSHA`` and runs the same commands inside Redis, so the
worker's cost per request falls to a few µs (``ops/bench/echo_throughput.py``). Each
script does exactly what the plain commands did, key by key, and Redis runs a script
atomically. Keys are passed as ``KEYS`` so ACL key patterns still apply.

Each script is a ``BatchScript``: its source and how a batch is laid out in its KEYS and
ARGV (``pack``). A batch's keys span many hash slots, so on Redis Cluster, where a command's
declared keys must share one slot, the same script runs once per node (or per slot) of the
batch, behind ``CLUSTER_PRELUDE`` (``cluster_script``).
"""

from __future__ import annotations

from collections.abc import Sequence

from results.topology import Arg, BatchScript, Item, Packed, Sections

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

#: KEYS = n attempts keys, then cancel keys; ARGV = ttl_s, n. One attempt more at each
#: record, and whether each request was cancelled: what a batch needs right before it runs,
#: in one command (it was two round trips, both inside the time the model waits).
#: Returns the n new counts, then per cancel key 1 if it exists, else 0.
START_ATTEMPTS = """
local n = tonumber(ARGV[2])
local replies = {}
for i = 1, n do
  replies[i] = redis.call('INCRBY', KEYS[i], 1)
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
for i = n + 1, #KEYS do
  replies[i] = redis.call('EXISTS', KEYS[i])
end
return replies
"""

#: KEYS = one cancel key per request. Returns, per key, 1 if it exists (the request was
#: cancelled), else 0: one command per batch where a pipeline of EXISTS cost the worker
#: ~60 µs of Python per request (the echo profile).
CANCEL_FLAGS = """
local flags = {}
for i = 1, #KEYS do
  flags[i] = redis.call('EXISTS', KEYS[i])
end
return flags
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

def _keys(*sections: Sequence[Item]) -> list[str]:
    return [item.key for section in sections for item in section]


def _pack_store(shared: Sequence[Arg], sections: Sections) -> Packed:
    """shared = (ttl_s,); sections = results (key, args = encoded, done channel), then the
    attempts keys of the settled records."""
    results, settled = sections
    values = [item.args[0] for item in results]
    channels = [item.args[1] for item in results]
    return _keys(results, settled), [shared[0], len(results), *values, *channels]


def _pack_accept(shared: Sequence[Arg], sections: Sections) -> Packed:
    """shared = (ttl_s,); sections = 'accepted' keys, then attempts keys to decrement."""
    accepted, released = sections
    return _keys(accepted, released), [shared[0], len(accepted)]


def _pack_count(shared: Sequence[Arg], sections: Sections) -> Packed:
    """shared = (delta, ttl_s); one section: the attempts keys (replies: their counts)."""
    return _keys(*sections), list(shared)


STORE = BatchScript("store", STORE_RESULTS, _pack_store, replicated=True)
ACCEPT = BatchScript("accept", MARK_ACCEPTED, _pack_accept)
COUNT = BatchScript("count", COUNT_ATTEMPTS, _pack_count)


def _pack_flags(shared: Sequence[Arg], sections: Sections) -> Packed:
    """No shared arguments; one section: the cancel keys (replies: 1 or 0 each)."""
    return _keys(*sections), []


CANCELLED = BatchScript("cancelled", CANCEL_FLAGS, _pack_flags)


def _pack_start(shared: Sequence[Arg], sections: Sections) -> Packed:
    """shared = (ttl_s,); sections = attempts keys (replies: their counts), then cancel keys
    (replies: 1 or 0 each)."""
    attempts, cancels = sections
    return _keys(attempts, cancels), [shared[0], len(attempts)]


START = BatchScript("start", START_ATTEMPTS, _pack_start)


def _pack_append(shared: Sequence[Arg], sections: Sections) -> Packed:
    """shared = (ttl_s,); sections = stream keys (args = the append's ARGV), then the result
    keys of the same requests, in the same order (same hash tag: same slot, same group)."""
    streams, results = sections
    keys = [key for stream, result in zip(streams, results, strict=True)
            for key in (stream.key, result.key)]
    return keys, [shared[0], *(arg for item in streams for arg in item.args)]


APPEND = BatchScript("append", APPEND_STREAMS, _pack_append)

# --- Redis Cluster ---------------------------------------------------------------------------
#
# On a cluster a script gets one declared key, KEYS[1], only so that the cluster client sends
# it to the node that owns it (and follows a MOVED or ASK); ARGV carries the number of keys,
# the script's own KEYS, then its own ARGV, and the prelude rebuilds both tables before the
# script runs unchanged. It first reads (EXISTS) every key: Redis refuses a key of another
# node ("non local key"), so a group that meets a slot which moved (resharding) fails before
# it changes anything and the caller regroups it by slot. On Redis >= 7 the scripts carry
# ``allow-cross-slot-keys`` (a group is every request of the batch on one node, whatever its
# slot) and notify with SPUBLISH, sharded pub/sub; before Redis 7 a group is one slot and
# they PUBLISH. ACLs still apply to every command a script runs.

#: Makes a cluster script run across the slots of one node (Redis >= 7).
CROSS_SLOT_HEADER = "#!lua flags=allow-cross-slot-keys\n"

#: ARGV = k, then the script's k keys, then the script's ARGV.
CLUSTER_PRELUDE = """local k = tonumber(ARGV[1])
local keys, argv = {}, {}
for i = 1, k do
  keys[i] = ARGV[1 + i]
  redis.call('EXISTS', keys[i])
end
for i = k + 2, #ARGV do
  argv[#argv + 1] = ARGV[i]
end
local KEYS, ARGV = keys, argv
"""


def cluster_script(source: str, sharded: bool) -> str:
    """``source`` for a cluster with (Redis >= 7) or without sharded pub/sub."""
    if sharded:
        source = source.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
    return (CROSS_SLOT_HEADER if sharded else "") + CLUSTER_PRELUDE + source.lstrip("\n")


def cluster_args(keys: Sequence[str], args: Sequence[Arg]) -> list[Arg]:
    """The ARGV of a cluster script for the script's own ``keys`` and ``args``."""
    return [len(keys), *keys, *args]
