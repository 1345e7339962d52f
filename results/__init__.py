"""Results: where each request's answer is stored, and how to read or wait for it.

``ResultStore`` is the interface; ``RedisResultStore`` (with its client- and worker-facing
constructors ``ResultReader`` and ``ResultWriter``) the production backend;
``InMemoryResultStore`` the same semantics in memory, for tests.
"""

from inferpool.protocol import ErrorInfo, ResultKeys, ResultRecord, ResultStatus, Timings
from results.memory_store import InMemoryResultStore
from results.reader import ResultReader, SyncResultReader
from results.redis_store import RedisResultStore
from results.store import Lookup, RequestState, ResultStore
from results.writer import ResultWriter

__all__ = [
    "ErrorInfo",
    "InMemoryResultStore",
    "Lookup",
    "RedisResultStore",
    "RequestState",
    "ResultKeys",
    "ResultReader",
    "ResultRecord",
    "ResultStatus",
    "ResultStore",
    "ResultWriter",
    "SyncResultReader",
    "Timings",
]
