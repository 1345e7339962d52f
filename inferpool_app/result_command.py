"""``inferpool result ID [--wait S]``: print a request's result, or say it is pending/unknown.

Exit codes: 0 a result was found (whatever its status), 2 no result yet (pending or
unknown), 3 ``--wait`` ran out (the {id, status} object is printed too), 1 Redis could not
be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from inferpool.errors import ResultStoreUnavailable, ResultTimeout
from inferpool.protocol import ResultKeys
from inferpool.settings import InferpoolSettings
from results.reader import SyncResultReader
from results.store import Lookup

EXIT_FOUND = 0
EXIT_UNAVAILABLE = 1
EXIT_NO_RESULT = 2
EXIT_TIMEOUT = 3


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"seconds must be >= 0, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``result`` subcommand."""
    parser = subparsers.add_parser(
        "result",
        help="print a request's result as JSON",
        description="Print a request's result as JSON, or {id, status} when it has none yet. "
        "Exit 0: found; 2: pending or unknown; 3: --wait ran out; 1: Redis unreachable.",
    )
    parser.add_argument("id", help="the request id")
    parser.add_argument(
        "--wait",
        type=_seconds,
        metavar="S",
        default=None,
        help="wait up to S seconds for the result to be written",
    )
    parser.set_defaults(func=run)


def _print_json(value: dict[str, Any]) -> None:
    print(json.dumps(value, indent=2))


def _report(request_id: str, lookup: Lookup) -> int:
    if lookup.record is not None:
        _print_json(lookup.record.to_json_ready())
        return EXIT_FOUND
    _print_json({"id": request_id, "status": lookup.state.value})
    return EXIT_NO_RESULT


def run(args: argparse.Namespace, settings: InferpoolSettings) -> int:
    """Look the result up (waiting up to ``args.wait`` seconds) and print it."""
    request_id: str = args.id
    keys = ResultKeys(settings.result_key_prefix)
    try:
        with SyncResultReader(settings.redis, keys) as reader:
            if args.wait:
                try:
                    _print_json(reader.wait(request_id, args.wait).to_json_ready())
                    return EXIT_FOUND
                except ResultTimeout as error:
                    print(f"inferpool result: {error}", file=sys.stderr)
                    code = _report(request_id, reader.get(request_id))
                    return EXIT_TIMEOUT if code == EXIT_NO_RESULT else code
            return _report(request_id, reader.get(request_id))
    except ResultStoreUnavailable as error:
        print(f"inferpool result: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
