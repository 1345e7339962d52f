"""Back-off: the one way inferpool waits before trying a dependency again.

``Backoff`` is the delay sequence (exponential, capped, reset after a success);
``retrying`` runs an action until it succeeds or its error is not one to retry, sleeping
the next delay between tries. Every retry loop in the project (result writes, dead-letter
copies, a waiting reader's reconnects, offset commits) uses these two, so they all back off
alike and report each retry the same way.

Own code rather than a retry library: two of the four loops are not "call until it stops
raising" (the commit loop backs off on a returned False, the reader bounds each sleep by
its caller's deadline), and a dozen lines serve all four.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

FIRST_S = 0.05
MAX_S = 2.0


class Backoff:
    """Delays ``first_s``, ``first_s * factor``, ... up to ``max_s``; ``reset()`` starts over."""

    def __init__(self, first_s: float = FIRST_S, max_s: float = MAX_S, factor: float = 2.0):
        if not 0 < first_s <= max_s or factor < 1:
            raise ValueError("Backoff needs 0 < first_s <= max_s and factor >= 1")
        self.first_s, self.max_s, self.factor = first_s, max_s, factor
        self._next_s = first_s
        self.attempt = 0  # delays handed out since the last reset

    @property
    def upcoming_s(self) -> float:
        """The delay the next call to ``next()`` returns."""
        return self._next_s

    def next(self) -> float:
        """The delay to wait now; the following one grows."""
        delay = self._next_s
        self._next_s = min(self._next_s * self.factor, self.max_s)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self._next_s, self.attempt = self.first_s, 0

    async def sleep(self, at_most_s: float | None = None) -> None:
        """Sleep the next delay (no longer than ``at_most_s``, when given)."""
        delay = self.next()
        await asyncio.sleep(delay if at_most_s is None else max(0.0, min(delay, at_most_s)))


#: Told of each failed try: the error, the try's number (1 for the first) and the delay.
OnRetry = Callable[[Exception, int, float], None]


async def retrying(
    action: Callable[[], Awaitable[T]],
    retry_on: tuple[type[Exception], ...],
    on_retry: OnRetry,
    backoff: Backoff | None = None,
    max_tries: int | None = None,
) -> T:
    """``await action()`` until it returns; an error of ``retry_on`` is reported to
    ``on_retry`` and tried again after the next delay, at most ``max_tries`` times in all
    (None: until cancelled). Any other error, or the last try's, is raised."""
    backoff = backoff or Backoff()
    tries = 0
    while True:
        tries += 1
        try:
            return await action()
        except retry_on as error:
            if max_tries is not None and tries >= max_tries:
                raise
            delay = backoff.next()
            on_retry(error, tries, delay)
            await asyncio.sleep(delay)
