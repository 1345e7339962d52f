"""Structured logging: one JSON event per step, fixed event names, key-value fields."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure_logging(level: str = "info", log_format: str = "json") -> None:
    """Configure structlog for this process. Called once, by the entry point."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(component: str, **fields: Any) -> Any:
    """A logger bound to one component, e.g. ``get_logger("worker.batcher")``.

    Lazy: safe at module level, it takes the configuration in force at its first use."""
    return structlog.get_logger(component=component, **fields)
