"""Results: where each request's answer is stored (Redis), and how to read or wait for it."""

from inferpool.protocol import ErrorInfo, ResultKeys, ResultRecord, ResultStatus, Timings
from results.reader import Lookup, RequestState, ResultReader, SyncResultReader
from results.writer import ResultWriter

__all__ = [
    "ErrorInfo",
    "Lookup",
    "RequestState",
    "ResultKeys",
    "ResultReader",
    "ResultRecord",
    "ResultStatus",
    "ResultWriter",
    "SyncResultReader",
    "Timings",
]
