"""SyncBridge: any ``Service`` driven from code without an event loop.

The service lives on a private event loop in a daemon thread; ``call`` runs one of its
coroutines there and blocks the calling thread until it is done, raising what it raised.
Safe from several threads at once and from inside another event loop's thread. The sync
facades (``SyncProducer``, ``SyncResultReader``) are thin shells over one bridge each.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import warnings
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

from inferpool.errors import LifecycleError, ResultTimeout
from inferpool.lifecycle import Service

S = TypeVar("S", bound=Service)
T = TypeVar("T")


class SyncBridge(Generic[S]):
    """Owns ``service`` and the thread its loop runs in; ``owner`` names the facade in
    messages. A call that has not finished after ``stuck_after_s`` (None: never) raises
    ``stuck_error``: the loop is presumed stuck."""

    def __init__(
        self,
        service: S,
        owner: str,
        stuck_after_s: float | None = None,
        stuck_error: type[Exception] = ResultTimeout,
    ) -> None:
        self.service = service
        self._owner = owner
        self._stuck_after_s = stuck_after_s
        self._stuck_error = stuck_error
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        """Start the loop thread and the service; fails loudly if called twice."""
        with self._lock:
            if self._loop is not None or self._closed:
                raise LifecycleError(f"{self._owner} was already started; create a new one")
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name=f"inferpool-{self._owner}", daemon=True
            )
            thread.start()
            self._loop, self._thread = loop, thread
        try:
            self.call(self.service.start())
        except BaseException:
            self.close()
            raise

    def call(self, coroutine: Coroutine[Any, Any, T], check_open: bool = True) -> T:
        """Run ``coroutine`` on the service's loop; block until it returns or raises."""
        loop = self._loop
        if loop is None or (check_open and self._closed):
            coroutine.close()
            raise LifecycleError(f"{self._owner} is not started; use it as 'with {self._owner}'")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            done, _ = concurrent.futures.wait([future], timeout=self._stuck_after_s)
        except BaseException:  # KeyboardInterrupt in the waiting thread
            future.cancel()
            raise
        if not done:
            future.cancel()
            raise self._stuck_error(
                f"{self._owner}'s event loop did not answer within {self._stuck_after_s} s"
            )
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise LifecycleError(f"{self._owner} was closed while this call was waiting") from None

    def close(self) -> None:
        """Stop the service, cancel what still runs on its loop, end the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self.call(self._shutdown(), check_open=False)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    async def _shutdown(self) -> None:
        await self.service.stop()
        current = asyncio.current_task()
        leftovers = [task for task in asyncio.all_tasks() if task is not current]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)

    def __del__(self) -> None:
        if self._loop is not None and not self._closed:
            warnings.warn(
                f"unclosed {self._owner}; call close() or use 'with'", ResourceWarning, stacklevel=1
            )
