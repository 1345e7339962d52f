"""The ``inferpool`` console command: ``worker``, ``submit``, ``result``, ``up``.

This module is the top of the dependency graph: it imports the subcommands of the three
packages. Settings are read once here and passed to the subcommand.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from inferpool.errors import ConfigurationError, InferpoolError
from inferpool.logs import configure_logging
from inferpool.settings import load_settings


def build_parser() -> argparse.ArgumentParser:
    import producer.cli
    import results.cli
    import worker.cli
    from inferpool import up

    parser = argparse.ArgumentParser(
        prog="inferpool",
        description="Kafka-driven inference worker pool. Settings come from INFERPOOL_* "
        "environment variables or .env; see README.md.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    worker.cli.register(subparsers)
    producer.cli.register(subparsers)
    results.cli.register(subparsers)
    up.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = args.overrides(args) if hasattr(args, "overrides") else {}
    try:
        settings = load_settings(**overrides)
    except ConfigurationError as error:
        print(f"inferpool: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
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
