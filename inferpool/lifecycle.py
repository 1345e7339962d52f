"""The one way things start and stop: an explicit object, used as ``async with``."""

from __future__ import annotations

import enum
import warnings
from types import TracebackType
from typing import Self

from inferpool.errors import LifecycleError


class _State(enum.Enum):
    CREATED = "created"
    STARTED = "started"
    STOPPED = "stopped"


class Service:
    """Base for every object that starts and stops.

    ``start()`` runs once (a second call fails loudly); ``stop()`` is idempotent and safe on a
    never-started object; ``async with`` does both; an object garbage-collected while still
    started warns with ``ResourceWarning``. Subclasses implement ``_start`` and ``_stop``.
    """

    _state: _State = _State.CREATED

    async def _start(self) -> None:
        """Acquire resources. On failure, release whatever was acquired and raise."""

    async def _stop(self) -> None:
        """Release resources. Called once, only after a successful start."""

    @property
    def started(self) -> bool:
        return self._state is _State.STARTED

    async def start(self) -> None:
        if self._state is not _State.CREATED:
            raise LifecycleError(
                f"{type(self).__name__} was already {self._state.value}; "
                "create a new one instead of starting it again"
            )
        await self._start()
        self._state = _State.STARTED

    async def stop(self) -> None:
        if self._state is not _State.STARTED:
            self._state = _State.STOPPED
            return
        self._state = _State.STOPPED
        await self._stop()

    def _require_started(self) -> None:
        if self._state is not _State.STARTED:
            raise LifecycleError(
                f"{type(self).__name__} is {self._state.value}, not started; "
                "use it inside 'async with'"
            )

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def __del__(self) -> None:
        if self._state is _State.STARTED:
            warnings.warn(
                f"unclosed {type(self).__name__}; call stop() or use 'async with'",
                ResourceWarning,
                stacklevel=1,
            )


class SyncService:
    """Base for what starts and stops without an event loop (the embedded services, which
    tests and ``inferpool up`` start before any loop; the sync clients): ``with`` calls
    ``start()`` and ``stop()``. Subclasses implement both; ``stop()`` must be safe after a
    failed start."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
