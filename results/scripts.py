"""The Lua scripts the worker runs in Redis: each handles a whole batch in one command.

A pipeline of plain commands costs the worker ~17 µs of client CPU per command (redis-py
builds and parses each one); a batch of 32 results was 96 commands. A script takes the
batch's keys and values in one ``EVALSHA`` and runs the same commands inside Redis, so the
worker's cost per request falls to a few µs (``ops/bench/echo_throughput.py``). Each
script does exactly what the plain commands did, key by key, and Redis runs a script
atomically. Keys are passed as ``KEYS`` so ACL key patterns still apply.

A batch's keys span many hash slots, so on Redis Cluster, where a command's declared keys
must share one slot, the ``CLUSTER_*`` variants run instead: one per node (or per slot) of
the batch, their keys in ARGV and only a routing key declared (``cluster_script``).
"""

from __future__ import annotations

from string import Template

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


# --- Redis Cluster ---------------------------------------------------------------------------
#
# KEYS[1] is one key of the group, declared only so that the cluster client sends the script
# to the node that owns it (and follows a MOVED or ASK); every key the script touches is in
# ARGV. On Redis >= 7 the scripts carry ``allow-cross-slot-keys``: a group may then hold every
# request of the batch that lives on one node, whatever its slot (Redis still refuses a key
# of another node: "non local key", and the caller regroups by slot). Before Redis 7 a group
# is one slot. ACLs still apply to every command a script runs.

#: Makes a cluster script run across the slots of one node (Redis >= 7).
CROSS_SLOT_HEADER = "#!lua flags=allow-cross-slot-keys\n"

#: ARGV = ttl_s, then per request: result key, attempts key, encoded result, done channel.
#: ``$publish`` is SPUBLISH (sharded pub/sub, Redis >= 7) or PUBLISH. Returns how many were new.
CLUSTER_STORE_RESULTS = Template("""
for i = 2, #ARGV, 4 do
  redis.call('EXISTS', ARGV[i], ARGV[i + 1])
end
local ttl = ARGV[1]
local written = 0
for i = 2, #ARGV, 4 do
  if redis.call('SET', ARGV[i], ARGV[i + 2], 'NX', 'EX', ttl) then
    written = written + 1
  end
  redis.call('$publish', ARGV[i + 3], '1')
  redis.call('DEL', ARGV[i + 1])
end
return written
""")

#: ARGV = ttl_s, then one 'accepted' key per request. Returns nothing.
CLUSTER_MARK_ACCEPTED = Template("""
for i = 2, #ARGV do
  redis.call('EXISTS', ARGV[i])
end
for i = 2, #ARGV do
  redis.call('SET', ARGV[i], '1', 'NX', 'EX', ARGV[1])
end
return 0
""")

#: ARGV = delta, ttl_s, then one attempts key per request. Returns each new count.
CLUSTER_COUNT_ATTEMPTS = Template("""
for i = 3, #ARGV do
  redis.call('EXISTS', ARGV[i])
end
local counts = {}
for i = 3, #ARGV do
  counts[i - 2] = redis.call('INCRBY', ARGV[i], ARGV[1])
  redis.call('EXPIRE', ARGV[i], ARGV[2])
end
return counts
""")


def cluster_script(template: Template, sharded: bool) -> str:
    """The source of a cluster script for a Redis with (>= 7) or without sharded pub/sub."""
    body = template.substitute(publish="SPUBLISH" if sharded else "PUBLISH")
    return (CROSS_SLOT_HEADER if sharded else "") + body.lstrip("\n")
