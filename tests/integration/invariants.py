"""The invariant every fault test checks, measured without trusting the code under test.

For every request id produced:

- exactly one result is stored, and it answers that request (an echo of its inputs);
- the model processed the request at least once, and exactly once on the clean paths
  (graceful drain, rebalance) -- counted from the RecordingEcho call log, which the model
  appends to itself, not from anything the worker reports;
- a duplicate run never changed a result already written: what a reader saw first (worker
  id, finished_ms, outputs, ...) is what is stored at the end.

``FirstSeen`` is the reader: it polls the result keys straight from Redis (plain GETs, no
pub/sub, no ResultReader) and keeps the first value it saw for each id. Requests must have
inputs that are unique and JSON-serializable: the call log is matched to ids by inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis.asyncio
import redis.exceptions

from inferpool.protocol import ResultKeys, ResultRecord, ResultStatus
from inferpool.settings import InferpoolSettings

POLL_INTERVAL_S = 0.05
GET_CHUNK = 500
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def input_key(value: Any) -> str:
    """How an input is recognised in the call log (one JSON line per processed input)."""
    return json.dumps(value, sort_keys=True)


def read_call_log(path: Path) -> tuple[Counter[str], int]:
    """How many times each input was processed, and the number of unreadable lines (a
    process killed in the middle of writing one)."""
    runs: Counter[str] = Counter()
    unreadable = 0
    if not path.exists():
        return runs, 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            runs[input_key(json.loads(line))] += 1
        except ValueError:
            unreadable += 1
    return runs, unreadable


async def read_results(
    client: redis.asyncio.Redis, keys: ResultKeys, ids: Iterable[str]
) -> dict[str, bytes]:
    """The raw stored result of each id that has one."""
    wanted = list(ids)
    found: dict[str, bytes] = {}
    for start in range(0, len(wanted), GET_CHUNK):
        chunk = wanted[start : start + GET_CHUNK]
        pipe = client.pipeline(transaction=False)
        for request_id in chunk:
            pipe.get(keys.result(request_id))
        for request_id, raw in zip(chunk, await pipe.execute(), strict=True):
            if raw is not None:
                found[request_id] = raw
    return found


class FirstSeen:
    """Watches result keys (``expect`` ids to add them) and keeps the first stored value of
    each, polling every 50 ms. Survives Redis restarts: a failed poll is tried again."""

    def __init__(self, settings: InferpoolSettings) -> None:
        self._url = settings.redis.url
        self._keys = ResultKeys(settings.result_key_prefix)
        self.raw: dict[str, bytes] = {}
        self.seen_at: dict[str, float] = {}  # loop time at which each result was first seen
        self._waiting: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._client: redis.asyncio.Redis | None = None

    def expect(self, ids: Iterable[str]) -> None:
        self._waiting.update(i for i in ids if i not in self.raw)

    @property
    def missing(self) -> set[str]:
        return set(self._waiting)

    def records(self) -> dict[str, ResultRecord]:
        return {rid: ResultRecord.decode(raw) for rid, raw in self.raw.items()}

    async def __aenter__(self) -> Self:
        self._client = redis.asyncio.Redis.from_url(
            self._url, socket_timeout=2, socket_connect_timeout=2
        )
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def _poll(self) -> None:
        assert self._client is not None
        loop = asyncio.get_running_loop()
        while True:
            if self._waiting:
                try:
                    found = await read_results(self._client, self._keys, list(self._waiting))
                except REDIS_ERRORS:
                    found = {}
                now = loop.time()
                for request_id, raw in found.items():
                    self.raw[request_id] = raw
                    self.seen_at[request_id] = now
                    self._waiting.discard(request_id)
            await asyncio.sleep(POLL_INTERVAL_S)

    async def wait_all(self, timeout_s: float) -> dict[str, ResultRecord]:
        """Until every expected id has a result; fails the test with the missing ids."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._waiting:
                    await asyncio.sleep(POLL_INTERVAL_S)
        except TimeoutError:
            missing = sorted(self._waiting)
            raise AssertionError(
                f"{len(missing)} results missing after {timeout_s}s, e.g. {missing[:5]}"
            ) from None
        return self.records()

    async def wait_for(self, ids: Iterable[str], timeout_s: float) -> None:
        wanted = set(ids)
        self.expect(wanted)
        async with asyncio.timeout(timeout_s):
            while not wanted <= self.raw.keys():
                await asyncio.sleep(POLL_INTERVAL_S)


@dataclass
class Ledger:
    """What the invariant found: every field but ``sent``, ``answered`` and ``runs`` lists
    violations (``duplicates`` only when exactly-once was required)."""

    sent: int
    answered: int
    runs: dict[str, int]  # request id -> times processed
    lost: list[str] = field(default_factory=list)
    wrong: dict[str, str] = field(default_factory=dict)  # stored result does not answer it
    never_run: list[str] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    changed: dict[str, tuple[ResultRecord, ResultRecord]] = field(default_factory=dict)
    unknown_calls: int = 0  # processed inputs that no request sent
    unreadable_calls: int = 0

    @property
    def duplicate_runs(self) -> int:
        return sum(count - 1 for count in self.runs.values() if count > 1)

    def violations(self, exactly_once: bool) -> list[str]:
        problems = []
        if self.lost:
            problems.append(f"{len(self.lost)} lost (no stored result), e.g. {self.lost[:5]}")
        if self.wrong:
            problems.append(f"{len(self.wrong)} wrong results, e.g. {list(self.wrong.items())[:3]}")
        if self.never_run:
            problems.append(
                f"{len(self.never_run)} answered but never processed by the model, "
                f"e.g. {self.never_run[:5]}"
            )
        if exactly_once and self.duplicate_runs:
            twice = dict(list(self.duplicates.items())[:5])
            problems.append(f"{self.duplicate_runs} duplicate runs on a clean path, e.g. {twice}")
        if self.changed:
            rid, (first, final) = next(iter(self.changed.items()))
            problems.append(
                f"{len(self.changed)} results changed after a reader saw them, e.g. {rid}: "
                f"first {first.worker}@{first.finished_ms}, now {final.worker}@{final.finished_ms}"
            )
        if self.unknown_calls:
            problems.append(f"{self.unknown_calls} processed inputs that were never sent")
        return problems

    def assert_holds(self, exactly_once: bool) -> None:
        problems = self.violations(exactly_once)
        assert not problems, "invariant broken:\n  " + "\n  ".join(problems)

    def summary(self) -> str:
        return (
            f"sent {self.sent}, answered {self.answered}, lost {len(self.lost)}, "
            f"duplicate runs {self.duplicate_runs} ({len(self.duplicates)} requests), "
            f"changed after read {len(self.changed)}"
        )


def judge(
    sent: Mapping[str, Any],
    stored: Mapping[str, ResultRecord],
    runs_by_input: Counter[str],
    first_seen: Mapping[str, ResultRecord],
    unreadable_calls: int = 0,
) -> Ledger:
    """The invariant over plain data: ``sent`` maps request id -> inputs (echoed back),
    ``stored`` is every stored result at the end, ``runs_by_input`` the call log, and
    ``first_seen`` the results as a reader first saw them."""
    ids_by_input = {input_key(value): rid for rid, value in sent.items()}
    assert len(ids_by_input) == len(sent), "inputs must be unique to match the call log"
    runs = {rid: runs_by_input.get(input_key(value), 0) for rid, value in sent.items()}
    ledger = Ledger(
        sent=len(sent),
        answered=sum(1 for rid in sent if rid in stored),
        runs=runs,
        unknown_calls=sum(n for key, n in runs_by_input.items() if key not in ids_by_input),
        unreadable_calls=unreadable_calls,
    )
    for rid, value in sent.items():
        record = stored.get(rid)
        if record is None:
            ledger.lost.append(rid)
            continue
        if record.id != rid or record.status is not ResultStatus.OK or record.outputs != value:
            ledger.wrong[rid] = f"{record.status.value} {record.error} {record.outputs!r:.80}"
        elif runs[rid] < 1:
            ledger.never_run.append(rid)
        if runs[rid] > 1:
            ledger.duplicates[rid] = runs[rid]
        first = first_seen.get(rid)
        if first is not None and first != record:
            ledger.changed[rid] = (first, record)
    return ledger


async def check_invariant(
    settings: InferpoolSettings,
    sent: Mapping[str, Any],
    call_log: Path,
    first_seen: Mapping[str, ResultRecord],
    *,
    exactly_once: bool,
) -> Ledger:
    """Read every stored result and the call log, judge, and fail the test on a violation.
    Returns the ledger (for tests that check more, e.g. that a duplicate run happened)."""
    keys = ResultKeys(settings.result_key_prefix)
    client = redis.asyncio.Redis.from_url(settings.redis.url, socket_timeout=5)
    try:
        raw = await read_results(client, keys, sent)
    finally:
        await client.aclose()
    stored = {rid: ResultRecord.decode(value) for rid, value in raw.items()}
    runs, unreadable = read_call_log(call_log)
    ledger = judge(sent, stored, runs, first_seen, unreadable)
    ledger.assert_holds(exactly_once)
    return ledger
