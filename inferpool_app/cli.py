"""The ``inferpool`` console command: ``worker``, ``submit``, ``result``, ``cancel``, ``up``.

Settings are read once here and passed to the subcommand; logging output is configured
here (JSON or console lines on stderr; ``up`` sends them to its log directory instead).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from inferpool.errors import ConfigurationError, InferpoolError
from inferpool.logs import configure_logging
from inferpool.settings import load_settings


def build_parser() -> argparse.ArgumentParser:
    from inferpool_app import cancel_command, result_command, submit_command, up, worker_command

    parser = argparse.ArgumentParser(
        prog="inferpool",
        description="Kafka-driven inference worker pool. Settings come from INFERPOOL_* "
        "environment variables or .env; see README.md.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    worker_command.register(subparsers)
    submit_command.register(subparsers)
    result_command.register(subparsers)
    cancel_command.register(subparsers)
    up.register(subparsers)
    return parser


#: Commands a person runs for one answer: their screen shows the answer, and inferpool's
#: events only from warnings up (INFERPOOL_LOG_LEVEL=debug still shows everything).
CLIENT_COMMANDS = frozenset({"submit", "result", "cancel"})
_LEVELS = ("debug", "info", "warning", "error")


def _log_level(args: argparse.Namespace, configured: str) -> str:
    if args.command in CLIENT_COMMANDS and configured != "debug":
        return max(configured, "warning", key=_LEVELS.index)
    return configured


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = args.overrides(args) if hasattr(args, "overrides") else {}
    try:
        settings = load_settings(**overrides)
    except ConfigurationError as error:
        print(f"inferpool: {error}", file=sys.stderr)
        return 2
    configure_logging(_log_level(args, settings.log_level), settings.log_format)
    try:
        code: int = args.func(args, settings)
    except InferpoolError as error:
        print(f"inferpool: {error.code}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
