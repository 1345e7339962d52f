"""connect: the store's Topology for ``INFERPOOL_REDIS_URL``, whichever form it has.

``redis://``, ``rediss://``, ``unix://`` and ``redis+sentinel://`` reach one primary
(``SinglePrimary``); ``redis+cluster://`` a Redis Cluster (``ClusterTopology``). The forms
are documented on ``inferpool.settings.RedisSettings``. Nothing is contacted yet: the first
command connects (and a cluster reads its slot map then).
"""

from __future__ import annotations

from inferpool.settings import RedisSettings
from results.cluster import ClusterTopology
from results.primary import SinglePrimary
from results.redis_client import open_redis
from results.topology import Topology


def connect(settings: RedisSettings) -> Topology:
    if settings.endpoints().kind == "cluster":
        return ClusterTopology(settings)
    return SinglePrimary(open_redis(settings), settings.wait_replicas, settings.wait_timeout_ms)
