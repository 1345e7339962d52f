"""``inferpool worker``: run one worker until SIGTERM/SIGINT; a second signal exits at once."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

from inferpool.errors import StageHung
from inferpool.logs import get_logger
from inferpool.settings import InferpoolSettings
from worker.pool import Worker

log = get_logger("app.worker")

HARD_EXIT_CODE = 130
HUNG_EXIT_CODE = 70  # EX_SOFTWARE


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("worker", help="run a worker of the pool (until SIGTERM)")
    parser.add_argument("--models", help="comma-separated model specs (overrides INFERPOOL_MODELS)")
    parser.add_argument("--max-batch-size", type=int, help="overrides INFERPOOL_MAX_BATCH_SIZE")
    parser.add_argument("--max-wait-ms", type=float, help="overrides INFERPOOL_MAX_WAIT_MS")
    parser.set_defaults(func=run, overrides=_overrides)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    fields = {
        "models": args.models,
        "max_batch_size": args.max_batch_size,
        "max_wait_ms": args.max_wait_ms,
    }
    return {name: value for name, value in fields.items() if value is not None}


def run(args: argparse.Namespace, settings: InferpoolSettings) -> int:
    return asyncio.run(serve(settings))


async def serve(settings: InferpoolSettings) -> int:
    """Start a worker, wait for a signal (or a failure), drain, exit."""
    if settings.torch_threads is not None:
        import torch

        torch.set_num_threads(settings.torch_threads)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("worker.hard_exit", signal=signal.Signals(signum).name)
            os._exit(HARD_EXIT_CODE)
        log.info("worker.signal", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    async with Worker(settings) as worker:
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(worker.closed.wait())
        await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        failed.cancel()
    if isinstance(worker.failed, StageHung):
        # the hung thread cannot be stopped, and the interpreter would wait for it at exit
        log.error("worker.hung_exit", error=str(worker.failed))
        os._exit(HUNG_EXIT_CODE)
    return 1 if worker.failed else 0
