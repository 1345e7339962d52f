"""``inferpool up``: the embedded default on loopback — a Tansu broker, a Redis, N worker
processes — and, with ``--demo``, a demo load that prints results and a summary.

Ctrl-C (or the end of the demo) stops everything it started, in reverse order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inferpool.embedded import TANSU_CLIENT_SETTINGS, EmbeddedBroker, EmbeddedRedis
from inferpool.errors import InferpoolError
from inferpool.logs import configure_logging
from inferpool.settings import InferpoolSettings, settings_environment
from inferpool_app.demo import demo


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("up", help="run a local broker, Redis and workers on loopback")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--models",
        default=None,
        help="models the workers serve (default: INFERPOOL_MODELS, i.e. echo)",
    )
    parser.add_argument("--broker-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--redis-port", type=int, default=None, help="default: a free port")
    parser.add_argument(
        "--demo",
        type=int,
        nargs="?",
        const=2000,
        default=None,
        metavar="N",
        help="submit N demo requests (default 2000), print a summary, stop",
    )
    parser.add_argument("--stay", action="store_true", help="keep running after the demo")
    parser.set_defaults(func=run, overrides=_overrides)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"models": args.models} if args.models else {}


def run(args: argparse.Namespace, settings: InferpoolSettings) -> int:
    logdir = Path(tempfile.mkdtemp(prefix="inferpool-up-"))
    with (logdir / "up.log").open("a", encoding="utf-8") as own_log:
        # the screen is for what a person reads; this process's events go to its log file
        configure_logging(settings.log_level, "json", stream=own_log)
        return _run(args, settings, logdir)


def _run(args: argparse.Namespace, settings: InferpoolSettings, logdir: Path) -> int:
    with EmbeddedBroker(args.broker_port) as broker, EmbeddedRedis(args.redis_port) as redis:
        settings = settings.model_copy(
            update={
                "kafka": settings.kafka.model_copy(
                    update={"bootstrap_servers": broker.bootstrap_servers}
                ),
                "redis": settings.redis.model_copy(update={"url": redis.url}),
                **TANSU_CLIENT_SETTINGS,
            }
        )
        print(f"broker  {broker.bootstrap_servers}  (Tansu, memory storage; log {broker.log_path})")
        print(f"redis   {redis.url}  (log {redis.log_path})")
        with _workers(settings, args.workers, logdir) as (logs, pids):
            pid_list = ", ".join(map(str, pids))
            print(f"workers {args.workers}  (pids {pid_list}; logs {logs}: up.log, worker-N.log)")
            print(
                f"\nexport INFERPOOL_KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers} "
                f"INFERPOOL_REDIS_URL={redis.url}\n"
            )
            try:
                if args.demo is not None:
                    asyncio.run(demo(settings, args.demo))
                if args.demo is None or args.stay:
                    print("running; Ctrl-C stops everything", flush=True)
                    stop_signals = {signal.SIGINT, signal.SIGTERM}
                    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
                    signal.sigwait(stop_signals)
            except KeyboardInterrupt:
                pass
            print("stopping workers, then Redis, then the broker", flush=True)
    return 0


@contextlib.contextmanager
def _workers(
    settings: InferpoolSettings, count: int, logdir: Path
) -> Iterator[tuple[Path, list[int]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERPOOL_")}
    env.update(_environment(settings, count))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(count):
            with (logdir / f"worker-{index}.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "inferpool", "worker"],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        _wait_until_joined(logdir, processes)
        yield logdir, [process.pid for process in processes]
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(settings.drain_timeout_s + 5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_joined(
    logdir: Path, processes: list[subprocess.Popen[bytes]], timeout_s: float = 300.0
) -> None:
    """Wait until every worker has logged its first partition assignment (loading a
    language model and checking its precisions takes a while on 2 cores)."""
    deadline = time.monotonic() + timeout_s
    pending = set(range(len(processes)))
    while pending:
        for index in list(pending):
            if processes[index].poll() is not None:
                log = (logdir / f"worker-{index}.log").read_text(errors="replace")
                raise InferpoolError(f"worker {index} exited at start:\n{log[-2000:]}")
            if '"rebalance.assigned"' in (logdir / f"worker-{index}.log").read_text(
                errors="replace"
            ):
                pending.discard(index)
        if time.monotonic() > deadline:
            raise InferpoolError(
                f"workers {sorted(pending)} did not join within {timeout_s}s; see {logdir}"
            )
        time.sleep(0.1)


def _threads_per_worker(workers: int) -> int:
    """Share the cores: processes of one thread each beat one process of many threads."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _environment(settings: InferpoolSettings, count: int) -> dict[str, str]:
    """The workers read these settings, with one torch thread per core each, JSON logs, and
    their health port picked free (each logs it: event health.listening)."""
    worker = settings.model_copy(
        update={
            "torch_threads": settings.torch_threads or _threads_per_worker(count),
            "log_format": "json",
            "metrics_host": "127.0.0.1",
            "metrics_port": 0,
        }
    )
    return settings_environment(worker)
