"""SyncProducer: the Producer for code without an event loop (Flask, Django, scripts).

It runs its own event loop in a private daemon thread; ``submit`` and ``submit_many`` block
the calling thread until Kafka has acknowledged, and raise the same InferpoolError
subclasses as the async Producer. Safe to call from several threads at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import warnings
from collections.abc import Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

from inferpool.errors import BrokerUnavailable, LifecycleError
from inferpool.protocol.wire import Encoding
from inferpool.settings import InferpoolSettings
from producer.client import Producer, SubmitRequest

T = TypeVar("T")

#: How long past the Producer's own time limit a caller waits before giving up on the loop.
STUCK_LOOP_GRACE_S = 10.0


class SyncProducer:
    """``with SyncProducer(settings) as producer: producer.submit("echo", [1, 2])``."""

    def __init__(self, settings: InferpoolSettings, encoding: Encoding = Encoding.MSGPACK) -> None:
        self._producer = Producer(settings, encoding)
        self._wait_s = settings.kafka.request_timeout_ms / 1000 * 2 + STUCK_LOOP_GRACE_S
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        """Start the loop thread and connect to Kafka; fails loudly if called twice."""
        with self._lock:
            if self._loop is not None or self._closed:
                raise LifecycleError("SyncProducer was already started; create a new one")
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="inferpool-producer",
                                      daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        try:
            self._call(self._producer.start())
        except BaseException:
            self.close()
            raise

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
    ) -> str:
        """Publish one request; blocks until acknowledged and returns its id."""
        return self._call(self._producer.submit(
            model, inputs, params=params, deadline_ms=deadline_ms, timeout_ms=timeout_ms,
            request_id=request_id, traceparent=traceparent,
        ))

    def submit_many(self, requests: Iterable[SubmitRequest]) -> list[str]:
        """Publish several requests; blocks until all are acknowledged; ids in order."""
        return self._call(self._producer.submit_many(list(requests)))

    def close(self) -> None:
        """Flush, disconnect and stop the loop thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._call(self._shutdown(), check_open=False)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T], check_open: bool = True) -> T:
        loop = self._loop
        if loop is None or (check_open and self._closed):
            coroutine.close()
            raise LifecycleError("SyncProducer is not started; use it as 'with SyncProducer(...)'")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            done, _ = concurrent.futures.wait([future], timeout=self._wait_s)
        except BaseException:  # KeyboardInterrupt in the waiting thread
            future.cancel()
            raise
        if not done:
            future.cancel()
            raise BrokerUnavailable(
                f"the producer's event loop did not answer within {self._wait_s} s"
            )
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise LifecycleError("SyncProducer was closed while this call was waiting") from None

    async def _shutdown(self) -> None:
        """Stop the producer, then cancel whatever is still running on the loop."""
        await self._producer.stop()
        current = asyncio.current_task()
        leftovers = [task for task in asyncio.all_tasks() if task is not current]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if self._loop is not None and not self._closed:
            warnings.warn("unclosed SyncProducer; call close() or use 'with'", ResourceWarning,
                          stacklevel=1)
