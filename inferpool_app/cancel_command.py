"""``inferpool cancel ID``: cancel a request (docs/protocol.md, "Cancellation").

Sets the request's cancel key (with the results' TTL) and prints where the request stands:
a request that has a result already keeps it ("nothing changed"); one not yet started
will be answered ``cancelled``. Exit codes: 0 the cancel key is set, 1 Redis could not be
reached.
"""

from __future__ import annotations

import argparse
import json
import sys

from inferpool.errors import InvalidRequest, ResultStoreUnavailable
from inferpool.protocol import ResultKeys, check_request_id
from inferpool.settings import InferpoolSettings
from results.reader import SyncResultReader

EXIT_SET = 0
EXIT_UNAVAILABLE = 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``cancel`` subcommand."""
    parser = subparsers.add_parser(
        "cancel",
        help="cancel a request",
        description="Cancel a request: a worker that has not started it answers 'cancelled' "
        "without running it; a generation stops at its next step; a finished request keeps "
        "its result. Exit 0: cancel set; 1: Redis unreachable.",
    )
    parser.add_argument("id", type=_request_id, help="the request id")
    parser.set_defaults(func=run)


def _request_id(text: str) -> str:
    try:
        return check_request_id(text)
    except InvalidRequest as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run(args: argparse.Namespace, settings: InferpoolSettings) -> int:
    request_id: str = args.id
    keys = ResultKeys(settings.result_key_prefix)
    try:
        with SyncResultReader(settings.redis, keys) as reader:
            reader.request_cancel(request_id)
            lookup = reader.get(request_id)
    except ResultStoreUnavailable as error:
        print(f"inferpool cancel: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if lookup.record is not None:
        note = f"it has its result already ({lookup.state.value}): nothing changed"
    else:
        note = f"it is {lookup.state.value}: unless it has started, it is answered 'cancelled'"
    print(json.dumps({"id": request_id, "status": lookup.state.value, "cancel": "set",
                      "note": note}, indent=2))
    return EXIT_SET
