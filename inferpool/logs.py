"""Structured logging: one event per step, fixed event names, key-value fields.

Libraries emit events and never configure output. Every inferpool component logs through
Python's standard ``logging`` under the ``inferpool`` logger (``inferpool.<component>``),
with structlog building the event; nothing is printed until the application says where:

- used as a library (the producer in a user's service), inferpool is as quiet as any
  library that uses ``logging``: warnings and errors reach Python's last-resort handler on
  stderr, debug and info events go nowhere unless the user's logging configuration asks;
- the application (``inferpool`` commands, ``inferpool up``, a worker process) calls
  ``configure_logging`` once, which renders inferpool's events as JSON lines (or console
  text) on stderr or into a file.

structlog's global configuration is left alone, so a service that uses structlog itself
keeps its own.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, MutableMapping
from typing import IO, Any

import structlog
from structlog.stdlib import ProcessorFormatter

NAMESPACE = "inferpool"

_EVENT_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,  # cheap: drops a disabled event before any work
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    ProcessorFormatter.wrap_for_formatter,
]

_HANDLER_NAME = "inferpool-output"


def get_logger(component: str, **fields: Any) -> Any:
    """A logger bound to one component, e.g. ``get_logger("worker.batcher")``.

    Safe at module level: it writes to ``logging.getLogger("inferpool.<component>")``,
    whose handlers and level are whatever the application configured when an event is
    emitted."""
    return structlog.wrap_logger(
        logging.getLogger(f"{NAMESPACE}.{component}"),
        processors=_EVENT_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
        component=component,
        **fields,
    )


def _renderer(log_format: str) -> Any:
    if log_format == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=False)


def configure_logging(
    level: str = "info", log_format: str = "json", stream: IO[str] | None = None
) -> None:
    """Where this process's inferpool events go: ``stream`` (stderr by default), rendered as
    JSON lines or console text, from ``level`` up. Called by the application's entry point;
    calling it again replaces the previous output."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        ProcessorFormatter(
            processors=[
                ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _renderer(log_format),
            ]
        )
    )
    root = logging.getLogger(NAMESPACE)
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(logging.getLevelNamesMapping()[level.upper()])
    root.propagate = False


class _Collector(logging.Handler):
    def __init__(self, events: list[MutableMapping[str, Any]]) -> None:
        super().__init__(logging.DEBUG)
        self._events = events

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, dict):
            self._events.append(
                {k: v for k, v in record.msg.items() if not k.startswith("_")}
            )


@contextlib.contextmanager
def capture_events(level: str = "debug") -> Iterator[list[MutableMapping[str, Any]]]:
    """Collect the event dicts inferpool emits meanwhile (for tests), from ``level`` up."""
    events: list[MutableMapping[str, Any]] = []
    collector = _Collector(events)
    root = logging.getLogger(NAMESPACE)
    previous = root.level
    root.addHandler(collector)
    root.setLevel(min(previous or logging.WARNING, logging.getLevelNamesMapping()[level.upper()]))
    try:
        yield events
    finally:
        root.removeHandler(collector)
        root.setLevel(previous)
