"""``inferpool submit``: publish one request from the command line, optionally wait for it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

from inferpool.errors import InferpoolError, RequestError, ResultTimeout
from inferpool.protocol.wire import Encoding, unpack_json
from inferpool.settings import InferpoolSettings
from producer.client import Producer

EXIT_OK = 0
EXIT_FAILED = 1  # the result is an error or expired, or Kafka / Redis failed
EXIT_USAGE = 2  # the arguments are wrong (as argparse)
EXIT_TIMEOUT = 3  # no result within --wait seconds
DEFAULT_STREAM_WAIT_S = 300.0

EPILOG = """\
--input and --params are JSON; a tensor is {"$tensor": {"dtype": "float32", "shape": [2],
"data": "<base64 of the little-endian bytes>"}} (see docs/protocol.md).
Without --wait the request id is printed. With --wait the result is printed as JSON.
With --stream (generative models) the tokens are printed as they are made, then the
finish reason and timings (stderr); --wait then bounds the whole generation (default 300 s).
Exit status: 0 ok; 1 error or expired result, or Kafka/Redis failed; 2 bad arguments;
3 no result within --wait seconds.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``submit`` subcommand to the top-level parser."""
    parser = subparsers.add_parser(
        "submit",
        help="publish one inference request",
        description="Publish one inference request to Kafka; optionally wait for its result.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="the model to run, e.g. echo")
    parser.add_argument("--input", required=True, metavar="JSON", help="the inputs, as JSON")
    parser.add_argument("--params", metavar="JSON", help="model parameters, a JSON object")
    parser.add_argument(
        "--deadline-ms", type=int, metavar="N",
        help="relative timeout: the request expires N milliseconds after it is submitted",
    )
    parser.add_argument(
        "--priority", choices=["high", "normal", "low"], default="normal",
        help="the lane: the request goes to that lane's topic (default normal)",
    )
    parser.add_argument("--tenant", help="whose request it is (fair share, rate limits)")
    parser.add_argument(
        "--admission", action="store_true",
        help="refuse at once (exit 1, admission_refused) if the pool's load says the request "
        "cannot finish by --deadline-ms",
    )
    parser.add_argument(
        "--json", action="store_true",
        help="send the request as JSON (application/json) instead of msgpack; "
        "the result is then stored as JSON too",
    )
    parser.add_argument(
        "--wait", type=float, metavar="S",
        help="wait up to S seconds for the result and print it as JSON",
    )
    parser.add_argument(
        "--stream", action="store_true",
        help="print a generative model's tokens as they arrive (params.stream is true)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: InferpoolSettings) -> int:
    """Run ``inferpool submit``; returns the exit status."""
    try:
        inputs = _parse_json("--input", args.input)
        params = _parse_json("--params", args.params) if args.params is not None else None
        if params is not None and not isinstance(params, dict):
            raise ValueError("--params must be a JSON object")
        if args.deadline_ms is not None and args.deadline_ms <= 0:
            raise ValueError("--deadline-ms must be a positive number of milliseconds")
        if args.wait is not None and args.wait <= 0:
            raise ValueError("--wait must be a positive number of seconds")
    except ValueError as error:
        print(f"inferpool submit: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_submit(args, settings, inputs, params))


def _parse_json(option: str, text: str) -> Any:
    try:
        return unpack_json(text.encode())
    except json.JSONDecodeError as error:
        raise ValueError(f"{option} is not valid JSON: {error}") from None
    except InferpoolError as error:
        raise ValueError(f"{option}: {error}") from None


async def _submit(
    args: argparse.Namespace, settings: InferpoolSettings, inputs: Any, params: Any
) -> int:
    encoding = Encoding.JSON if args.json else Encoding.MSGPACK
    try:
        if getattr(args, "stream", False):
            params = {**(params or {}), "stream": True}
        admission = getattr(args, "admission", False)
        async with contextlib.AsyncExitStack() as stack:
            control = None
            if admission:
                from inferpool.protocol import ResultKeys
                from results.reader import ResultReader

                control = await stack.enter_async_context(
                    ResultReader(settings.redis, ResultKeys(settings.result_key_prefix))
                )
            producer = await stack.enter_async_context(Producer(settings, encoding, control))
            request_id = await producer.submit(
                args.model, inputs, params=params, timeout_ms=args.deadline_ms,
                priority=getattr(args, "priority", "normal"), tenant=getattr(args, "tenant", None),
                admission=admission,
            )
    except RequestError as error:
        print(f"inferpool submit: error: {error.code}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except InferpoolError as error:
        print(f"inferpool submit: error: {error.code}: {error}", file=sys.stderr)
        return EXIT_FAILED
    if getattr(args, "stream", False):
        return await _stream(settings, request_id, args.wait or DEFAULT_STREAM_WAIT_S)
    if args.wait is None:
        print(request_id)
        return EXIT_OK
    return await _wait(settings, request_id, args.wait)


async def _stream(settings: InferpoolSettings, request_id: str, timeout_s: float) -> int:
    from inferpool.protocol import ResultKeys, ResultRecord
    from inferpool_app.streaming import print_stream
    from results.reader import ResultReader

    try:
        async with ResultReader(settings.redis, ResultKeys(settings.result_key_prefix)) as reader:
            record: ResultRecord = await print_stream(reader.stream(request_id, timeout_s))
    except ResultTimeout:
        print(f"\ninferpool submit: no result for request {request_id} within {timeout_s} s",
              file=sys.stderr)
        return EXIT_TIMEOUT
    except InferpoolError as error:
        print(f"\ninferpool submit: error: {error.code}: {error} (request {request_id})",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if record.ok else EXIT_FAILED


async def _wait(settings: InferpoolSettings, request_id: str, timeout_s: float) -> int:
    from inferpool.protocol import ResultKeys
    from results.reader import ResultReader

    try:
        async with ResultReader(settings.redis, ResultKeys(settings.result_key_prefix)) as reader:
            record = await reader.wait(request_id, timeout_s)
    except ResultTimeout:
        print(f"inferpool submit: no result for request {request_id} within {timeout_s} s",
              file=sys.stderr)
        return EXIT_TIMEOUT
    except InferpoolError as error:
        print(f"inferpool submit: error: {error.code}: {error} (request {request_id})",
              file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(record.to_json_ready()))
    return EXIT_OK if record.ok else EXIT_FAILED
