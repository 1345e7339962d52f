"""Load generator: submit requests at a steady rate for a while, wait for every result, report.

    python ops/loadgen.py --model minilm --rate 200 --duration 60
    docker compose --profile load run --rm loadgen --rate 200 --duration 60

Kafka, Redis, the request topic and the result key prefix come from the INFERPOOL_*
environment, as for every inferpool process. Bounded in count and time: at most
``--max-requests`` requests, ``--duration`` at most an hour, and results are awaited at most
``--result-timeout`` seconds after the last submit. Prints submit rate, throughput (results
per second), client-side latency percentiles (submit call to result seen in Redis) and the
workers' own submit-to-stored times. Exits 0 when every request got an ``ok`` result, 1 when
some did not, 2 when Kafka or Redis could not be reached at all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from inferpool.errors import InferpoolError
from inferpool.logs import configure_logging
from inferpool.protocol import ResultKeys, ResultRecord
from inferpool.settings import InferpoolSettings, load_settings
from producer.client import Producer, SubmitRequest
from results.reader import ResultReader

TICK_S = 0.1
MAX_RATE = 10_000.0
MAX_DURATION_S = 3600.0
MAX_REQUESTS = 1_000_000
MAX_RESULT_TIMEOUT_S = 600.0
TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Kafka partitions cap how many workers of one consumer group can share the load.",
    "Micro-batching trades a few milliseconds of waiting for much higher throughput on "
    "the same hardware, as long as the batch closes before the request's deadline.",
    "Results are stored in Redis under the request id.",
)


@dataclass
class Tally:
    """What came back: counts by status and code, and latencies in seconds."""

    planned: int = 0
    submitted: int = 0
    submit_failures: int = 0
    missing: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    client_latency_s: list[float] = field(default_factory=list)
    worker_latency_s: list[float] = field(default_factory=list)
    first_submit: float | None = None
    last_submit: float | None = None
    last_result: float | None = None

    def add(self, record: ResultRecord, sent_at: float, now: float) -> None:
        self.statuses[record.status.value] += 1
        if record.error is not None:
            self.codes[record.error.code] += 1
        self.client_latency_s.append(now - sent_at)
        if record.timings.end_to_end_ms:
            self.worker_latency_s.append(record.timings.end_to_end_ms / 1000)
        self.last_result = now


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def due(rate: float, elapsed_s: float, sent: int, limit: int) -> int:
    """How many requests to send now to keep ``rate`` per second, never past ``limit``."""
    target = min(limit, math.floor(rate * elapsed_s + 1e-9))
    return max(0, target - sent)


def inputs_for(index: int, fixed: Any) -> Any:
    return fixed if fixed is not None else f"#{index} {TEXTS[index % len(TEXTS)]}"


async def _collect(
    reader: ResultReader, ids: list[str], sent_at: float, deadline: float, tally: Tally
) -> None:
    """Record each result of ``ids`` as it arrives; those missing at ``deadline`` count."""
    seen = 0
    timeout_s = max(deadline - time.monotonic(), 0.001)
    try:
        async with contextlib.aclosing(reader.wait_many(ids, timeout_s)) as records:
            async for record in records:
                seen += 1
                tally.add(record, sent_at, time.monotonic())
    except InferpoolError:  # ResultTimeout, or Redis unreachable at the end
        tally.missing += len(ids) - seen


async def generate(settings: InferpoolSettings, options: argparse.Namespace) -> Tally:
    """Submit at ``options.rate`` for ``options.duration`` s; wait for the results."""
    limit = min(options.max_requests, math.ceil(options.rate * options.duration))
    tally = Tally(planned=limit)
    keys = ResultKeys(settings.result_key_prefix)
    waiters: set[asyncio.Task[None]] = set()
    async with Producer(settings) as producer, ResultReader(settings.redis, keys) as reader:
        start = time.monotonic()
        deadline = start + options.duration + options.result_timeout
        tick = 0
        # Stop at the count, or at the duration even if Kafka could not keep the pace.
        while (sent := tally.submitted + tally.submit_failures) < limit and (
            time.monotonic() - start < options.duration
        ):
            count = due(options.rate, time.monotonic() - start + TICK_S, sent, limit)
            if count:
                requests = [
                    SubmitRequest(options.model, inputs_for(sent + i, options.input),
                                  timeout_ms=options.timeout_ms)
                    for i in range(count)
                ]
                sent_at = time.monotonic()
                try:
                    ids = await producer.submit_many(requests)
                except InferpoolError as error:
                    tally.submit_failures += count
                    print(f"loadgen: submit failed: {error.code}: {error}", file=sys.stderr)
                else:
                    tally.submitted += len(ids)
                    tally.first_submit = tally.first_submit or sent_at
                    tally.last_submit = time.monotonic()
                    task = asyncio.create_task(_collect(reader, ids, sent_at, deadline, tally))
                    waiters.add(task)
                    task.add_done_callback(waiters.discard)
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * TICK_S - time.monotonic()))
        if waiters:
            await asyncio.gather(*waiters)
    return tally


def summary(tally: Tally, options: argparse.Namespace) -> dict[str, Any]:
    submit_span = (tally.last_submit or 0) - (tally.first_submit or 0)
    result_span = (tally.last_result or 0) - (tally.first_submit or 0)
    received = sum(tally.statuses.values())

    def ms(values: Sequence[float], q: float) -> float:
        return round(percentile(values, q) * 1000, 1)

    return {
        "model": options.model,
        "target_rate": options.rate,
        "planned": tally.planned,
        "submitted": tally.submitted,
        "submit_failures": tally.submit_failures,
        "submit_rate": round(tally.submitted / submit_span, 1) if submit_span > 0 else None,
        "results": received,
        "throughput": round(received / result_span, 1) if result_span > 0 else None,
        "statuses": dict(tally.statuses),
        "error_codes": dict(tally.codes),
        "missing": tally.missing,
        "latency_ms": {f"p{q}": ms(tally.client_latency_s, q) for q in (50, 90, 99, 100)},
        "worker_end_to_end_ms": {f"p{q}": ms(tally.worker_latency_s, q) for q in (50, 99)},
    }


def print_report(report: dict[str, Any]) -> None:
    latency, worker = report["latency_ms"], report["worker_end_to_end_ms"]
    print(f"model {report['model']}: {report['submitted']} of {report['planned']} submitted "
          f"({report['submit_failures']} failed) at {report['submit_rate']} req/s "
          f"(target {report['target_rate']})")
    print(f"results: {report['results']} {report['statuses']}, missing {report['missing']}, "
          f"throughput {report['throughput']} results/s")
    if report["error_codes"]:
        print(f"error codes: {report['error_codes']}")
    print(f"latency ms (submit -> result seen): p50 {latency['p50']}  p90 {latency['p90']}  "
          f"p99 {latency['p99']}  max {latency['p100']}")
    print(f"worker end-to-end ms (submit -> stored): p50 {worker['p50']}  p99 {worker['p99']}")


def _bounded(kind: type[float] | type[int], low: float, high: float) -> Any:
    def parse(text: str) -> float | int:
        value = kind(text)
        if not low < value <= high:
            raise argparse.ArgumentTypeError(f"must be > {low:g} and <= {high:g}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Submit inferpool requests at a steady rate, then report throughput and "
        "latency. Connection settings come from INFERPOOL_* environment variables.")
    parser.add_argument("--model", default="echo", help="model to call (default: echo)")
    parser.add_argument("--rate", type=_bounded(float, 0, MAX_RATE), default=50.0,
                        help="requests per second (default 50)")
    parser.add_argument("--duration", type=_bounded(float, 0, MAX_DURATION_S), default=30.0,
                        help="seconds of submitting (default 30, at most 3600)")
    parser.add_argument("--max-requests", type=_bounded(int, 0, MAX_REQUESTS), default=100_000,
                        help="stop after this many requests (default 100000)")
    parser.add_argument("--timeout-ms", type=_bounded(int, 0, 3_600_000), default=30_000,
                        help="each request's deadline, from its submit (default 30000)")
    parser.add_argument("--result-timeout", type=_bounded(float, 0, MAX_RESULT_TIMEOUT_S),
                        default=60.0, help="seconds to wait for results after the last submit")
    parser.add_argument("--input", type=json.loads, default=None,
                        help="the inputs of every request, as JSON (default: varied texts)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except InferpoolError as error:
        print(f"loadgen: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        tally = asyncio.run(generate(settings, options))
    except InferpoolError as error:
        print(f"loadgen: {error.code}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    report = summary(tally, options)
    if options.json:
        print(json.dumps(report))
    else:
        print_report(report)
    all_ok = tally.planned > 0 and report["statuses"].get("ok", 0) == tally.planned
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
