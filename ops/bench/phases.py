"""The order of the measurements, and what each one records in the result.

Everything that loads a model is started first and kept loaded: the limit processes, the
pool's workers, the Celery worker. Then, round after round, the three are measured back to
back at saturation (limit, pool, Celery), so that each round's ratios are taken under the
same machine noise; while the limit or Celery runs, the pool's workers are frozen (SIGSTOP),
as idle workers still poll the broker. Then the pool's open loops and the search for its
open-loop capacity (``ops.bench.capacity``); then the pool's workers stop, and Celery's open
loops run; then the echo worker measures the pipeline alone. In the pinned topology
(``ops.bench.topology``) the broker, Redis and this process run on one core, the workers and
the limit on the other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from inferpool.embedded import EmbeddedBroker, EmbeddedRedis
from inferpool.settings import InferpoolSettings, KafkaSettings, RedisSettings
from inferpool.topics import ensure_topics
from ops.bench import capacity, echo
from ops.bench.cpu import CpuMeter, own_cpu_s, process_cpu_s, thread_cpu_s, tree_cpu_s
from ops.bench.limit import LimitResult, LimitRunner, bench_texts
from ops.bench.loads import LoadTarget, TextCycle, closed_loop, open_loop
from ops.bench.pool_client import PoolTarget
from ops.bench.pool_workers import PoolWorkers, write_models_file
from ops.bench.stats import LOOP_THREADS, LoadPoint
from ops.bench.topology import SHARED, Topology, affinity, pin
from ops.bench.verdicts import ECHO_TARGET_RPS

#: Celery open loops run only at rates it can serve; above this share of its saturation
#: its queue grows for as long as the run lasts, and a percentile means nothing.
CELERY_MAX_LOAD = 0.95
#: Celery also runs at these shares of its own saturation: latency at equal relative load.
OWN_SHARES = (0.5, 0.8)


class Progress(Protocol):
    def step(self, name: str) -> None: ...
    def tick(self, status: str) -> None: ...
    def done(self, line: str) -> None: ...


def count_steps(args: argparse.Namespace) -> int:
    """Progress-bar steps: what ``bench`` will call ``progress.done`` for."""
    # services, limit, pool, idle; rounds; rates
    steps: int = 4 + 2 * args.rounds + len(args.fractions) + args.search_depth
    if not args.no_celery:
        steps += 1 + args.rounds + len(args.fractions) + len(OWN_SHARES)  # start, rounds, rates
    if not args.no_echo:
        steps += 2  # measured, then profiled (or not)
    return steps


def pool_settings(args: argparse.Namespace, broker: EmbeddedBroker, redis: EmbeddedRedis,
                  name: str, models: list[str]) -> InferpoolSettings:
    return InferpoolSettings(
        _env_file=None,  # type: ignore[call-arg]
        kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
        redis=RedisSettings(url=redis.url),
        request_topic=f"{name}.requests",
        request_topic_partitions=args.partitions,
        dead_letter_topic=f"{name}.dead-letter",
        consumer_group=f"{name}-workers",
        result_key_prefix=name,
        models=models,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        # workers are frozen (SIGSTOP) while something else is measured, up to ~25 s
        session_timeout_ms=45_000,
    )


@dataclasses.dataclass
class System:
    """A system under load: its target, and the meter of the processes it runs on."""

    target: LoadTarget
    meter: CpuMeter
    rounds: list[LoadPoint] = dataclasses.field(default_factory=list)


class Bench:
    def __init__(self, args: argparse.Namespace, progress: Progress, result: dict[str, Any],
                 workdir: Path, topology: Topology = SHARED) -> None:
        self.args = args
        self.topology = topology
        self.progress = progress
        self.result = result
        self.workdir = workdir
        self.texts = TextCycle(bench_texts())

    # --- measuring one thing ----------------------------------------------------------

    async def _measured(self, system: System, run: Callable[[], Awaitable[LoadPoint]]
                        ) -> LoadPoint:
        """Run one load, noting the CPU each process used meanwhile."""
        before, started = system.meter.snapshot(), time.perf_counter()
        point = await run()
        point.cpu_wall_s = round(time.perf_counter() - started, 3)
        point.cpu_s = system.meter.used(before, system.meter.snapshot())
        return point

    async def saturate(self, system: System, round_index: int) -> LoadPoint:
        args, name = self.args, system.target.system
        self.progress.step(f"round {round_index + 1}: {name} closed loop")
        point = await self._measured(system, lambda: closed_loop(
            system.target, self.texts, args.outstanding, args.warmup_s, args.measure_s,
            self.progress.tick))
        system.rounds.append(point)
        self.progress.done(
            f"round {round_index + 1}: {name} saturation {point.achieved_rps:,.1f} requests/s"
            f" ({args.outstanding} outstanding"
            + (f", mean batch {point.mean_batch_size:.1f}" if point.mean_batch_size else "")
            + f", lost {point.lost})")
        return point

    async def open_point(self, system: System, rate: float, fraction: float,
                         index: int, seconds: float | None = None) -> LoadPoint:
        args, name = self.args, system.target.system
        self.progress.step(f"{name}: {rate:,.0f}/s open loop")
        point = await self._measured(system, lambda: open_loop(
            system.target, self.texts, rate, seconds or args.open_s, args.warmup_s,
            self.progress.tick, seed=args.seed + index))
        point.fraction = fraction
        latency = point.latency
        self.progress.done(
            f"{name} at {rate:,.0f}/s ({fraction:.0%} of pool saturation): p50/p95/p99 "
            + ("/".join(f"{v:.1f}" for v in (latency.p50_ms, latency.p95_ms, latency.p99_ms))
               if latency else "-")
            + f" ms, answered {point.achieved_rps:,.1f}/s"
            + (f", mean batch {point.mean_batch_size:.1f}" if point.mean_batch_size else "")
            + f", lost {point.lost}, generator late by up to {point.max_lag_ms or 0:.1f} ms")
        return point

    def limit_round(self, runner: LimitRunner, runs: list[LimitResult], index: int) -> None:
        args = self.args
        self.progress.step(f"round {index + 1}: limit")
        run = runner.run(args.limit_s)
        runs.append(run)
        self.progress.done(
            f"round {index + 1}: limit {run.requests_per_s:,.1f} requests/s ({run.precision}, "
            f"one batch of {args.max_batch_size} in {run.batch_ms_median:.1f} ms)")

    # --- the whole run ----------------------------------------------------------------

    async def run(self) -> None:
        args, progress = self.args, self.progress
        progress.step("starting Tansu and redis-server")
        with EmbeddedBroker(workdir=_mkdir(self.workdir / "tansu")) as broker, \
                EmbeddedRedis(workdir=_mkdir(self.workdir / "redis")) as redis:
            progress.done(f"broker {broker.bootstrap_servers}, redis {redis.url}")
            try:
                if self.topology.pinned:
                    pin([broker.pid, redis.pid, os.getpid()], self.topology.services)
                with contextlib.ExitStack() as stack:
                    await self._models_loaded(stack, broker, redis)
                    await self._measure_loaded(broker, redis)
                if not args.no_echo:
                    await self._guarded("echo", self._echo(broker, redis))
            finally:
                if self.topology.pinned:
                    pin([os.getpid()], None)  # this process may use every core again

    async def _models_loaded(self, stack: contextlib.ExitStack, broker: EmbeddedBroker,
                             redis: EmbeddedRedis) -> None:
        args, progress = self.args, self.progress
        progress.step(f"limit: loading {args.workers} process(es) x {args.threads} thread(s)")
        self.limit_runner = await asyncio.to_thread(stack.enter_context, LimitRunner(
            args.workers, args.threads, args.max_batch_size, args.precision,
            self.workdir / "limit.log"))
        progress.done(f"limit: {args.workers} process(es) loaded, "
                      f"{args.model} {self.limit_runner.precision}")

        self.settings = pool_settings(args, broker, redis, "bench", [args.model])
        await ensure_topics(self.settings.kafka,
                            [self.settings.request_topic, self.settings.dead_letter_topic],
                            args.partitions, 1)
        models_file = write_models_file(self.workdir / "models.toml", args.model,
                                        args.precision, args.max_batch_size)
        workers = PoolWorkers(self.settings, args.workers, args.threads, self.workdir / "logs",
                              models_file=models_file)
        progress.step(f"pool: starting {args.workers} worker(s)")
        self.workers = await asyncio.to_thread(stack.enter_context, workers.running())
        loaded = workers.first_event("model.loaded") or {}
        self.result["pool"] = {"precision": loaded.get("precision"),
                               "logs": str(workers.logdir)}
        progress.done(f"pool: {args.workers} worker(s) joined, {args.model} "
                      f"{loaded.get('precision')}, logs in {workers.logdir}")

        if self.topology.pinned:
            pin([*self.limit_runner.pids, *workers.pids], self.topology.workers)
            self.result["topology"] = {
                "name": self.topology.name, "description": self.topology.describe(),
                "affinity": {"broker": affinity(broker.pid), "redis": affinity(redis.pid),
                             "load generator": affinity(os.getpid()),
                             "workers": [affinity(pid) for pid in workers.pids],
                             "limit": [affinity(pid) for pid in self.limit_runner.pids]}}
        else:
            self.result["topology"] = {"name": self.topology.name,
                                       "description": self.topology.describe()}
        self.peer: Any = None
        if not args.no_celery:
            await self._guarded("celery start", self._start_celery(stack))

    async def _start_celery(self, stack: contextlib.ExitStack) -> None:
        from ops.bench.celery_peer import PREFETCH_MULTIPLIER, CeleryPeer

        args = self.args
        processes = args.celery_processes
        threads = max(1, args.workers * args.threads // processes)
        self.progress.step(f"Celery: starting {processes} process(es)")
        peer = CeleryPeer(processes, threads, args.precision, self.workdir)
        self.peer = await asyncio.to_thread(stack.enter_context, peer)
        precision = ",".join(sorted({info["precision"] for info in peer.children_info}))
        self.result["celery"] = {"layout": {
            "processes": processes, "threads": threads, "prefetch": PREFETCH_MULTIPLIER,
            "precision": precision,
            "why": "the same total threads as the pool, in single-threaded processes: the "
                   "best Celery layout BASELINES found on 2 cores"}}
        self.progress.done(f"Celery: {processes} prefork process(es) x {threads} thread(s) "
                           f"ready, {args.model} {precision}")

    async def _measure_loaded(self, broker: EmbeddedBroker, redis: EmbeddedRedis) -> None:
        args = self.args
        workers, peer = self.workers, self.peer
        probes: dict[str, Callable[[], float | None]] = {
            "workers": lambda: _sum(process_cpu_s(pid) for pid in workers.pids),
            LOOP_THREADS: lambda: _sum(thread_cpu_s(pid, pid) for pid in workers.pids),
            "broker": lambda: process_cpu_s(broker.pid),
            "redis": lambda: process_cpu_s(redis.pid),
            "load generator": own_cpu_s,
        }
        if peer is not None:
            probes["celery"] = lambda: tree_cpu_s(peer.pid)
            probes["celery redis"] = lambda: process_cpu_s(peer.redis.pid)
        meter = CpuMeter(probes)
        async with contextlib.AsyncExitStack() as targets:
            pool = System(await targets.enter_async_context(PoolTarget(self.settings,
                                                                       args.model)), meter)
            celery = None
            if peer is not None:
                from ops.bench.celery_peer import CeleryTarget

                celery = System(await targets.enter_async_context(CeleryTarget(peer.url)),
                                meter)
            await self._idle(meter)
            limit_runs: list[LimitResult] = []
            for index in range(args.rounds):
                with workers.frozen():
                    await asyncio.to_thread(self.limit_round, self.limit_runner, limit_runs,
                                            index)
                await self.saturate(pool, index)
                if celery is not None:
                    with workers.frozen():
                        await self._guarded("celery", self.saturate(celery, index))
            self.result["limit"] = _limit_summary(limit_runs)
            self.result["pool"]["saturation"] = _saturation_summary(pool.rounds)
            pool_rate = self.result["pool"]["saturation"]["achieved_rps"]
            self.result["pool"]["open"] = [
                _json(await self.open_point(pool, fraction * pool_rate, fraction, index))
                for index, fraction in enumerate(args.fractions)]
            if args.search_depth:
                self.result["pool"]["capacity"] = await self._capacity(pool, pool_rate)
            await asyncio.to_thread(workers.stop)  # idle, they would still poll the broker
            if celery is not None and celery.rounds:
                self.result["celery"]["saturation"] = _saturation_summary(celery.rounds)
                await self._guarded("celery", self._celery_rates(celery, pool_rate))

    async def _capacity(self, pool: System, saturation_rps: float) -> dict[str, Any]:
        """The open-loop capacity search; each probe a shorter open loop of its own."""
        probes = iter(range(100, 200))

        async def measure(rate: float) -> LoadPoint:
            return await self.open_point(pool, rate, rate / saturation_rps, next(probes),
                                         seconds=self.args.probe_s)

        found = await capacity.search(measure, saturation_rps, self.args.search_depth)
        self.progress.done(f"pool open-loop capacity: {found['capacity_rps']:,.0f} req/s = "
                           f"{found['capacity_over_saturation']:.2f}x closed-loop saturation")
        return found

    async def _idle(self, meter: CpuMeter, seconds: float = 4.0) -> None:
        """What the loaded, idle pool costs (its workers poll the broker): cores busy."""
        self.progress.step("pool: idle")
        before = meter.snapshot()
        await asyncio.sleep(seconds)
        used = meter.used(before, meter.snapshot())
        idle = {name: round(used[name] / seconds, 3)
                for name in ("workers", LOOP_THREADS, "broker", "redis") if name in used}
        self.result["pool"]["idle_cores"] = idle
        self.progress.done("pool idle: " + ", ".join(f"{name} {cores:.2f} cores"
                                                     for name, cores in idle.items()))

    async def _celery_rates(self, celery: System, pool_rate: float) -> None:
        own = self.result["celery"]["saturation"]["achieved_rps"]
        # the pool's rates (those Celery can serve), and half and 80 % of Celery's own
        wanted = sorted([(f * pool_rate, f) for f in self.args.fractions]
                        + [(share * own, share * own / pool_rate) for share in OWN_SHARES])
        points = self.result["celery"]["open"] = []
        for index, (rate, fraction) in enumerate(wanted):
            if rate > CELERY_MAX_LOAD * own:
                points.append(_json(LoadPoint(
                    system="celery", mode="open", duration_s=0, requests=0, achieved_rps=0,
                    offered_rps=rate, fraction=fraction,
                    note="not run: above Celery's saturation")))
                self.progress.done(f"celery at {rate:,.0f}/s: not run, above its saturation")
                continue
            points.append(_json(await self.open_point(celery, rate, fraction, index)))

    async def _echo(self, broker: EmbeddedBroker, redis: EmbeddedRedis) -> None:
        args, progress = self.args, self.progress
        texts = TextCycle(bench_texts()).take(args.echo_requests)
        progress.step(f"echo: 1 worker draining {len(texts):,} requests")
        run = await echo.measure(pool_settings(args, broker, redis, "echo", ["echo"]), texts,
                                 self.workdir / "logs", broker.pid, redis.pid)
        progress.done(f"echo: {run.requests_per_s:,.0f} requests/s through 1 worker; worker "
                      f"CPU {run.worker_cpu_us_per_request or 0:,.0f} µs/request, its event "
                      f"loop thread {run.loop_thread_cpu_us_per_request or 0:,.0f} µs "
                      f"(busy {run.loop_thread_busy or 0:.0%} of the drain)")
        self.result["echo"] = run.to_json()
        profile = args.profile_echo == "always" or (
            args.profile_echo == "auto" and run.requests_per_s < ECHO_TARGET_RPS)
        if not profile:
            progress.done("echo: no profile needed")
            return
        progress.step("echo: again, its event loop under cProfile")
        profiled = await echo.measure(
            pool_settings(args, broker, redis, "echo-profiled", ["echo"]),
            texts[: max(5000, len(texts) // 2)], self.workdir / "logs", broker.pid, redis.pid,
            profile=True)
        self.result["echo"].update(profiled=True, profile=profiled.profile,
                                   profile_stages=profiled.profile_stages,
                                   profile_total_s=profiled.profile_total_s,
                                   profile_requests=profiled.requests)
        top = profiled.profile[0]["function"] if profiled.profile else "(no profile)"
        progress.done(f"echo profiled: most own time in {top}")

    async def _guarded(self, name: str, phase: Awaitable[object]) -> None:
        """A failed echo or Celery phase is reported; the other measurements are kept."""
        try:
            await phase
        except Exception as error:
            self.result.setdefault("failures", {})[name] = f"{type(error).__name__}: {error}"
            self.progress.done(f"{name} FAILED: {type(error).__name__}: {error}")


def _limit_summary(runs: list[LimitResult]) -> dict[str, Any]:
    summary = dataclasses.asdict(runs[-1])
    cpu = [run.cpu_us_per_request for run in runs if run.cpu_us_per_request is not None]
    summary.update(
        cpu_us_per_request=statistics.fmean(cpu) if cpu else None,
        requests_per_s=statistics.fmean(run.requests_per_s for run in runs),
        batch_ms_median=statistics.median(run.batch_ms_median for run in runs),
        rounds=[run.requests_per_s for run in runs])
    return summary


def _saturation_summary(rounds: list[LoadPoint]) -> dict[str, Any]:
    """The last round's point, with its rate and mean batch the means over all rounds and
    its CPU the sums over them."""
    summary = _json(rounds[-1])
    summary["achieved_rps"] = statistics.fmean(p.achieved_rps for p in rounds)
    sizes = [p.mean_batch_size for p in rounds if p.mean_batch_size]
    summary["mean_batch_size"] = statistics.fmean(sizes) if sizes else None
    summary["rounds"] = [p.achieved_rps for p in rounds]
    summary["cpu_wall_s"] = sum(p.cpu_wall_s or 0 for p in rounds)
    summary["answered_total"] = sum(p.answered_total or 0 for p in rounds)
    summary["cpu_s"] = {name: sum(p.cpu_s.get(name, 0) for p in rounds)
                        for name in rounds[-1].cpu_s}
    return summary


def _sum(values: Iterator[float | None]) -> float | None:
    total = 0.0
    for value in values:
        if value is None:
            return None
        total += value
    return total


def _json(point: LoadPoint) -> dict[str, Any]:
    return dataclasses.asdict(point)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
