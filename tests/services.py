"""The one way the fixtures run an embedded broker or redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import pytest

from inferpool.embedded import EmbeddedProcess

P = TypeVar("P", bound=EmbeddedProcess)


def running(process: P, request: pytest.FixtureRequest | None = None) -> Iterator[P]:
    """For ``yield from`` in a fixture: start ``process``; afterwards stop it, print its log's
    tail if a test of the session failed, and remove its files."""
    try:
        with process:
            yield process
    finally:
        if request is not None and request.session.testsfailed:
            print(f"\n----- {process.name} log (last lines) -----\n{process.log_tail()}")
        process.cleanup()
