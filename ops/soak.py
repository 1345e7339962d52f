"""Soak: run the pool under a steady load while killing and restarting its parts, then
check that no request was lost.

    python ops/soak.py                 # 10 minutes (the default)
    python ops/soak.py --minutes 2 --rate 50 --workers 3 --seed 7

Everything runs on loopback and stops when the soak ends: a Tansu broker and an append-only
redis-server (inferpool.embedded), and ``python -m inferpool worker`` processes serving the
tests' RecordingEcho model (``INFERPOOL_MODELS=echo=testing_models:recording_echo``, with
tests/ on PYTHONPATH), which appends every input it processes to a call log -- the count of
processing that does not come from the code under test.

While the load runs, every few seconds (at random) one fault: a worker SIGKILLed, a worker
SIGTERMed (drain), or Redis SIGKILLed; each is restarted after a short random pause (Redis on
the same port and directory, so its append-only file brings back what it stored). Then the
load stops, everything is brought back, and every request's result is awaited (bounded).

The check is the fault suite's invariant (tests/integration/invariants.py): every request
has exactly one stored result that answers it, was processed at least once (call log), and
its result never changed after a reader first saw it. Prints requests sent, answered,
duplicate runs, lost (must be 0) and latency percentiles (submit acknowledged to result first
seen, polled every 50 ms). Exits 0 when the invariant holds, 1 when it does not, 2 on a setup
failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
sys.path[:0] = [str(ROOT), str(TESTS / "integration")]

from invariants import FirstSeen, Ledger, input_key, judge, read_call_log, read_results  # noqa: E402
from redis.asyncio import Redis  # noqa: E402

from inferpool.embedded import TANSU_CLIENT_SETTINGS, EmbeddedBroker, EmbeddedRedis  # noqa: E402
from inferpool.logs import configure_logging  # noqa: E402
from inferpool.protocol import ResultKeys, ResultRecord  # noqa: E402
from inferpool.settings import (  # noqa: E402
    InferpoolSettings,
    KafkaSettings,
    RedisSettings,
    settings_environment,
)
from inferpool.topics import ensure_topics  # noqa: E402
from producer.client import Producer, SubmitRequest  # noqa: E402

MAX_MINUTES = 24 * 60
MAX_RATE = 2000.0
TICK_S = 0.1
SETTLE_TIMEOUT_S = 180.0  # after the load: how long every result may take to arrive
DRAIN_WAIT_S = 30.0  # how long a SIGTERMed worker may take to exit before it is killed


@dataclass
class Options:
    minutes: float
    rate: float
    workers: int
    partitions: int
    seed: int
    fault_every_s: tuple[float, float]
    workdir: Path


@dataclass
class Chaos:
    """What was done to the pool."""

    faults: Counter[str] = field(default_factory=Counter)
    hung_drains: int = 0
    worker_exit_codes: Counter[int] = field(default_factory=Counter)


class WorkerSlot:
    """One place in the pool, filled by a succession of worker processes."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self._env = env
        self._workdir = workdir
        self.generation = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.generation += 1
        log = self._workdir / f"{self.name}.{self.generation}.log"
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "inferpool", "worker"],
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )

    def joined(self) -> bool:
        log = self._workdir / f"{self.name}.{self.generation}.log"
        return log.exists() and '"rebalance.assigned"' in log.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.alive:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    async def wait_exit(self, timeout_s: float) -> int | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.process is not None and self.process.poll() is None:
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(0.05)
        return None if self.process is None else self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()


def pool_settings(
    broker: EmbeddedBroker, redis: EmbeddedRedis, options: Options
) -> InferpoolSettings:
    return InferpoolSettings(
        _env_file=None,  # type: ignore[call-arg]  # pydantic-settings' own argument
        kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers, request_timeout_ms=10_000),
        redis=RedisSettings(url=redis.url),
        request_topic="soak.requests",
        request_topic_partitions=options.partitions,
        dead_letter_topic="soak.dead-letter",
        consumer_group="soak-workers",
        result_key_prefix="soak",
        session_timeout_ms=6_000,
        heartbeat_interval_ms=500,
        max_batch_size=16,
        max_wait_ms=10,
        drain_timeout_s=10,
    ).model_copy(update=TANSU_CLIENT_SETTINGS)


def worker_env(settings: InferpoolSettings, call_log: Path) -> dict[str, str]:
    """The environment of a worker process: exactly these settings, the recording model."""
    worker = settings.model_copy(
        update={
            "models": ["echo=testing_models:recording_echo"],
            "log_format": "json",
            "metrics_host": "127.0.0.1",
            "metrics_port": 0,
        }
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERPOOL_")}
    env.update(settings_environment(worker))
    env["INFERPOOL_TEST_CALL_LOG"] = str(call_log)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), env.get("PYTHONPATH", "")])
    return env


class Load:
    """Submits ``rate`` requests per second, in a burst every TICK_S, until stopped."""

    def __init__(self, producer: Producer, watcher: FirstSeen, rate: float) -> None:
        self._producer = producer
        self._watcher = watcher
        self._per_tick = rate * TICK_S
        self.sent: dict[str, str] = {}
        self.submitted_at: dict[str, float] = {}
        self.failures = 0
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick, owed, number = loop.time(), 0.0, 0
        while not self._stopping.is_set():
            owed += self._per_tick
            count, owed = int(owed), owed - int(owed)
            inputs = [f"s-{number + i}" for i in range(count)]
            number += count
            if inputs:
                try:
                    ids = await self._producer.submit_many(SubmitRequest("echo", v) for v in inputs)
                except Exception as error:  # the broker is never faulted; report, go on
                    self.failures += 1
                    print(f"soak: submit failed: {error}", file=sys.stderr)
                else:
                    now = loop.time()
                    self.sent.update(zip(ids, inputs, strict=True))
                    self.submitted_at.update(dict.fromkeys(ids, now))
                    self._watcher.expect(ids)
            next_tick += TICK_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(0.0, next_tick - loop.time()))

    def stop(self) -> None:
        self._stopping.set()


class Soak:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.random = random.Random(options.seed)
        self.chaos = Chaos()
        self.slots: list[WorkerSlot] = []
        self._restarts: set[asyncio.Task[None]] = set()
        self._redis_down = False

    def _later(self, delay_s: float, what: str, restart: Callable[[], None]) -> None:
        """Restart ``what`` after ``delay_s`` (the fault's duration, chosen at random)."""

        async def run() -> None:
            await asyncio.sleep(delay_s)
            await asyncio.to_thread(restart)
            if what == "redis":
                self._redis_down = False
            log(f"restarted {what}")

        task = asyncio.create_task(run())
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _fault(self, redis: EmbeddedRedis) -> None:
        alive = [slot for slot in self.slots if slot.alive]
        choices = ["worker-sigkill", "worker-sigterm"] if len(alive) >= 2 else []
        if not self._redis_down:
            choices.append("redis-sigkill")
        if not choices:
            return
        action = self.random.choice(choices)
        self.chaos.faults[action] += 1
        if action == "redis-sigkill":
            log("SIGKILL redis")
            self._redis_down = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(redis.pid, signal.SIGKILL)
            await asyncio.to_thread(redis.stop)  # reaps it
            self._later(self.random.uniform(1.0, 5.0), "redis", redis.start)
            return
        slot = self.random.choice(alive)
        if action == "worker-sigkill":
            log(f"SIGKILL {slot.name}")
            slot.kill()
        else:
            log(f"SIGTERM {slot.name}")
            slot.signal(signal.SIGTERM)
            code = await slot.wait_exit(DRAIN_WAIT_S)
            if code is None:
                self.chaos.hung_drains += 1
                slot.kill()
            else:
                self.chaos.worker_exit_codes[code] += 1
        self._later(self.random.uniform(0.5, 3.0), slot.name, slot.start)

    async def run(self) -> int:
        options = self.options
        call_log = options.workdir / "calls.jsonl"
        redis = EmbeddedRedis(workdir=options.workdir / "redis", appendonly=True)
        (options.workdir / "redis").mkdir()
        (options.workdir / "broker").mkdir()
        with EmbeddedBroker(workdir=options.workdir / "broker") as broker:
            redis.start()
            try:
                return await self._run(broker, redis, call_log)
            finally:
                for slot in self.slots:
                    slot.kill()
                for task in list(self._restarts):
                    task.cancel()
                redis.stop()

    async def _run(self, broker: EmbeddedBroker, redis: EmbeddedRedis, call_log: Path) -> int:
        options = self.options
        settings = pool_settings(broker, redis, options)
        await ensure_topics(
            settings.kafka,
            [settings.request_topic, settings.dead_letter_topic],
            options.partitions,
            1,
        )
        env = worker_env(settings, call_log)
        self.slots = [
            WorkerSlot(f"worker-{i}", env, options.workdir) for i in range(options.workers)
        ]
        for slot in self.slots:
            slot.start()
        await wait_for_joins(self.slots)
        log(
            f"{len(self.slots)} workers joined; "
            f"load at {options.rate:g}/s for {options.minutes:g} min"
        )
        started = time.monotonic()
        async with FirstSeen(settings) as seen, Producer(settings) as producer:
            load = Load(producer, seen, options.rate)
            load_task = asyncio.create_task(load.run())
            deadline = started + options.minutes * 60
            while time.monotonic() < deadline:
                pause = self.random.uniform(*options.fault_every_s)
                await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                if time.monotonic() < deadline:
                    await self._fault(redis)
            load.stop()
            await load_task
            log(f"load stopped after {time.monotonic() - started:.0f} s; bringing everything back")
            await asyncio.gather(*self._restarts, return_exceptions=True)
            for slot in self.slots:
                if not slot.alive:
                    slot.start()
            with contextlib.suppress(AssertionError):  # what is missing is reported below
                await seen.wait_all(SETTLE_TIMEOUT_S)
            first = seen.records()
            latencies = sorted(
                seen.seen_at[rid] - load.submitted_at[rid]
                for rid in first
                if rid in load.submitted_at
            )
        for slot in self.slots:
            slot.signal(signal.SIGTERM)
        for slot in self.slots:
            if await slot.wait_exit(DRAIN_WAIT_S) is None:
                slot.kill()
        ledger = await final_ledger(settings, load.sent, call_log, first)
        report(options, self.chaos, ledger, latencies, first, load.failures)
        return 0 if not ledger.violations(exactly_once=False) else 1


async def wait_for_joins(slots: list[WorkerSlot], timeout_s: float = 120.0) -> None:
    """Until every worker's log shows it holds partitions (so the load meets a ready pool)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not all(slot.joined() for slot in slots):
        if loop.time() >= deadline or not all(slot.alive for slot in slots):
            raise RuntimeError(f"workers did not all join within {timeout_s:g}s; see their logs")
        await asyncio.sleep(0.1)


async def final_ledger(
    settings: InferpoolSettings,
    sent: dict[str, str],
    call_log: Path,
    first: dict[str, ResultRecord],
) -> Ledger:
    client = Redis.from_url(settings.redis.url, socket_timeout=10)
    try:
        raw = await read_results(client, ResultKeys(settings.result_key_prefix), sent)
    finally:
        await client.aclose()
    stored = {rid: ResultRecord.decode(value) for rid, value in raw.items()}
    runs, unreadable = read_call_log(call_log)
    assert len({input_key(v) for v in sent.values()}) == len(sent)
    return judge(sent, stored, runs, first, unreadable)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(fraction * len(values)))]


def report(
    options: Options,
    chaos: Chaos,
    ledger: Ledger,
    latencies: list[float],
    first: dict[str, ResultRecord],
    submit_failures: int,
) -> None:
    worker_e2e = sorted(r.timings.end_to_end_ms for r in first.values())
    faults = ", ".join(f"{count} {name}" for name, count in sorted(chaos.faults.items()))
    drains = ", ".join(f"exit {code}: {n}" for code, n in sorted(chaos.worker_exit_codes.items()))
    print(
        f"soak: {options.minutes:g} min, {options.workers} workers, {options.partitions} "
        f"partitions, {options.rate:g} requests/s, seed {options.seed}"
    )
    print(f"faults:                {faults or 'none'}")
    print(
        f"SIGTERM drains:        {drains or 'none'}; hung (killed after {DRAIN_WAIT_S:g} s): "
        f"{chaos.hung_drains}"
    )
    print(f"requests sent:         {ledger.sent}  (submit failures: {submit_failures})")
    print(f"answered:              {ledger.answered}")
    print(
        f"duplicates run:        {ledger.duplicate_runs} extra runs over "
        f"{len(ledger.duplicates)} requests (call log; {ledger.unreadable_calls} torn lines)"
    )
    print(f"lost:                  {len(ledger.lost)}")
    print(f"changed after read:    {len(ledger.changed)}")
    print(f"wrong / never run:     {len(ledger.wrong)} / {len(ledger.never_run)}")
    print(
        f"latency (submit acknowledged -> result seen, 50 ms polls): "
        f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
        f"max {percentile(latencies, 1.0) * 1000:.0f} ms"
    )
    print(
        f"worker end_to_end_ms:  p50 {percentile(worker_e2e, 0.5):.0f}, "
        f"p99 {percentile(worker_e2e, 0.99):.0f}, max {percentile(worker_e2e, 1.0):.0f}"
    )
    problems = ledger.violations(exactly_once=False)
    print(
        "invariant:             " + ("holds" if not problems else "BROKEN: " + "; ".join(problems))
    )
    print(f"logs:                  {options.workdir}")


def log(message: str) -> None:
    print(f"soak {time.strftime('%H:%M:%S')} {message}", flush=True)


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="load duration (default 10)")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (50)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (3)")
    parser.add_argument("--partitions", type=int, default=4, help="request topic partitions (4)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--fault-every",
        type=float,
        nargs=2,
        default=(4.0, 10.0),
        metavar=("MIN_S", "MAX_S"),
        help="seconds between faults (4 10)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="logs and Redis files (default: a new temporary directory)",
    )
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= MAX_MINUTES:
        parser.error(f"--minutes must be in (0, {MAX_MINUTES}]")
    if not 0 < args.rate <= MAX_RATE:
        parser.error(f"--rate must be in (0, {MAX_RATE:g}]")
    if args.workers < 2:
        parser.error("--workers must be at least 2 (one is always being faulted)")
    low, high = args.fault_every
    if not 0 < low <= high:
        parser.error("--fault-every needs 0 < MIN_S <= MAX_S")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="inferpool-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    return Options(
        args.minutes, args.rate, args.workers, args.partitions, seed, (low, high), workdir
    )


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    configure_logging("warning", "console")
    try:
        return asyncio.run(Soak(options).run())
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        print(f"soak: setup failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
