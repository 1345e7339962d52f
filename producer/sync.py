"""SyncProducer: the Producer for code without an event loop (Flask, Django, scripts).

It runs the Producer on a private event loop in a daemon thread (``inferpool.sync``);
``submit`` and ``submit_many`` block the calling thread until Kafka has acknowledged, and
raise the same InferpoolError subclasses as the async Producer. Safe to call from several
threads at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from inferpool.errors import BrokerUnavailable
from inferpool.lifecycle import SyncService
from inferpool.protocol.wire import Encoding
from inferpool.settings import InferpoolSettings
from inferpool.sync import SyncBridge
from producer.client import Producer, SubmitRequest

#: How long past the Producer's own time limit a caller waits before giving up on the loop.
STUCK_LOOP_GRACE_S = 10.0


class SyncProducer(SyncService):
    """``with SyncProducer(settings) as producer: producer.submit("echo", [1, 2])``."""

    def __init__(self, settings: InferpoolSettings, encoding: Encoding = Encoding.MSGPACK) -> None:
        self._bridge = SyncBridge(
            Producer(settings, encoding),
            "SyncProducer",
            stuck_after_s=settings.kafka.request_timeout_ms / 1000 * 2 + STUCK_LOOP_GRACE_S,
            stuck_error=BrokerUnavailable,
        )

    def start(self) -> None:
        """Start the loop thread and connect to Kafka; fails loudly if called twice."""
        self._bridge.start()

    def submit(
        self,
        model: str,
        inputs: Any,
        *,
        params: Mapping[str, Any] | None = None,
        deadline_ms: int | None = None,
        timeout_ms: int | None = None,
        request_id: str | None = None,
        traceparent: str | None = None,
        priority: str = "normal",
        tenant: str | None = None,
    ) -> str:
        """Publish one request; blocks until acknowledged and returns its id. (To cancel,
        use ``results.SyncResultReader.request_cancel``; admission at submit is the async
        Producer's.)"""
        return self._bridge.call(self._bridge.service.submit(
            model, inputs, params=params, deadline_ms=deadline_ms, timeout_ms=timeout_ms,
            request_id=request_id, traceparent=traceparent, priority=priority, tenant=tenant,
        ))

    def submit_many(self, requests: Iterable[SubmitRequest]) -> list[str]:
        """Publish several requests; blocks until all are acknowledged; ids in order."""
        return self._bridge.call(self._bridge.service.submit_many(list(requests)))

    def stop(self) -> None:
        """Flush, disconnect and stop the loop thread. Idempotent."""
        self._bridge.close()

    close = stop  # the name a client's users expect
