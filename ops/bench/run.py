"""``python -m ops.bench.run``: the pool against its limit and against Celery, in one go.

1. limit: the model alone in a tight batched loop, in the pool's processes x threads layout,
   at its max_batch_size;
2. the pool end to end (Kafka in, Redis out), workers as ``inferpool worker`` processes:
   a closed loop at saturation, then open loops (Poisson arrivals) at fractions of that rate;
   and one ``echo`` worker draining pre-loaded requests: the pipeline's own ceiling;
3. the peer: a Celery worker, one text per task, at saturation and at the same rates;
4. the pool's open-loop capacity: a short bisection on the Poisson rate it answers with a
   stable queue (``ops.bench.capacity``);
5. all of it again, shorter and without Celery and echo, in the *pinned* topology: the
   broker, Redis and the load generator on one core, one worker (and the limit) with one
   torch thread on the other, as a deployment puts them (``ops.bench.topology``);
6. JSON, Markdown and a PNG plot under ``--out``, both topologies side by side.

The three saturation measurements run back to back, in rounds, with every model loaded
once beforehand. Everything (broker, Redis, load generator, workers) shares this machine:
read the ratios, which hold on a noisy machine better than the absolute figures do.

    python -m ops.bench.run                     # defaults: under 10 minutes on 2 cores
    python -m ops.bench.run --quick             # a smoke run of about 4 minutes
    python -m ops.bench.run --topology shared   # only the shared topology
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python ops/bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from inferpool.logs import configure_logging
from ops.bench.environment import machine, versions
from ops.bench.phases import Bench, count_steps
from ops.bench.report import write_all
from ops.bench.topology import SHARED, Topology, pinned
from ops.bench.verdicts import ECHO_TARGET_RPS, add_ratios, add_targets

DEFAULT_FRACTIONS = (0.1, 0.5, 0.8, 0.95)
QUICK_FRACTIONS = (0.5, 0.95)
PINNED_FRACTIONS = (0.1, 0.5, 0.8)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        prog="python -m ops.bench.run", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="short windows, two open-loop rates, fewer echo requests")
    parser.add_argument("--workers", type=int, default=2, help="pool worker processes (2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per worker (default: cores // workers, as "
                             "'inferpool up' does)")
    parser.add_argument("--model", default="minilm", choices=["minilm"])
    parser.add_argument("--precision", default="int8", help="quantization mode (int8)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--outstanding", type=int, default=None,
                        help="closed loop: requests kept in flight (4 x batch x workers)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="saturation rounds, each limit -> pool -> Celery (2; quick 1)")
    parser.add_argument("--measure-s", type=float, default=None,
                        help="closed-loop window (10; quick 6)")
    parser.add_argument("--limit-s", type=float, default=None,
                        help="limit window (10; quick 5)")
    parser.add_argument("--open-s", type=float, default=None,
                        help="each open-loop run (12; quick 8)")
    parser.add_argument("--warmup-s", type=float, default=None,
                        help="not counted at the start of each run (3; quick 2)")
    parser.add_argument("--fractions", type=float, nargs="+", default=None,
                        help="open-loop rates, as fractions of the pool's saturation "
                             "(0.1 0.5 0.8 0.95; quick 0.5 0.95)")
    parser.add_argument("--echo-requests", type=int, default=None,
                        help="pre-loaded echo requests (60000; quick 10000)")
    parser.add_argument("--profile-echo", choices=["auto", "always", "never"], default=None,
                        help=f"profile the echo worker (auto: when under {ECHO_TARGET_RPS:,}/s;"
                             " quick: never)")
    parser.add_argument("--celery-processes", type=int, default=None,
                        help="Celery prefork processes (default: all the pool's threads, one "
                             "thread each: the best Celery layout on 2 cores)")
    parser.add_argument("--no-celery", action="store_true")
    parser.add_argument("--no-echo", action="store_true")
    parser.add_argument("--topology", choices=["both", "shared", "pinned"], default="both",
                        help="shared: every process on every core; pinned: broker, Redis and "
                             "load generator on one core, workers on the other; both (default)")
    parser.add_argument("--search-depth", type=int, default=3,
                        help="open-loop capacity search: probes (3; 0 skips it)")
    parser.add_argument("--probe-s", type=float, default=None,
                        help="each capacity probe's open loop (10; quick 6)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    quick = args.quick
    args.threads = args.threads or max(1, cores // args.workers)
    args.outstanding = args.outstanding or 4 * args.max_batch_size * args.workers
    args.rounds = args.rounds or (1 if quick else 2)
    args.measure_s = args.measure_s or (6.0 if quick else 10.0)
    args.limit_s = args.limit_s or (5.0 if quick else 10.0)
    args.open_s = args.open_s or (8.0 if quick else 12.0)
    args.probe_s = args.probe_s or (6.0 if quick else 10.0)
    args.warmup_s = args.warmup_s if args.warmup_s is not None else (2.0 if quick else 3.0)
    args.fractions = tuple(args.fractions or (QUICK_FRACTIONS if quick else DEFAULT_FRACTIONS))
    args.echo_requests = args.echo_requests or (10_000 if quick else 60_000)
    args.profile_echo = args.profile_echo or ("never" if quick else "auto")
    args.celery_processes = args.celery_processes or args.workers * args.threads
    return args


class Progress:
    """One bar over the steps (tqdm on stderr); each step's line above it when it ends."""

    def __init__(self, steps: int) -> None:
        try:
            from tqdm import tqdm
        except ImportError:  # the bench extra brings tqdm; without it, plain lines
            self._bar: Any = None
        else:
            self._bar = tqdm(total=steps, file=sys.stderr, unit="step", dynamic_ncols=True,
                             bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}] "
                                        "{postfix}")
        self._started = time.perf_counter()

    def step(self, name: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(name)
            self._bar.set_postfix_str("")
        else:
            print(f"... {name}", file=sys.stderr, flush=True)

    def tick(self, status: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(status)

    def done(self, line: str) -> None:
        elapsed = time.perf_counter() - self._started
        text = f"[{elapsed:4.0f}s] {line}"
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
            self._bar.update(1)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def pinned_args(args: argparse.Namespace) -> argparse.Namespace:
    """The pinned run: one worker with one torch thread on the workers' core, one round, no
    Celery, no echo (both are measured in the shared run)."""
    return argparse.Namespace(**{
        **vars(args), "workers": 1, "threads": 1, "rounds": 1, "no_celery": True,
        "no_echo": True, "outstanding": 4 * args.max_batch_size,
        "fractions": PINNED_FRACTIONS if not args.quick else QUICK_FRACTIONS})


def new_result(args: argparse.Namespace, command: str, workdir: Path) -> dict[str, Any]:
    return {
        "command": command,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "model": args.model, "precision": args.precision, "workers": args.workers,
            "threads_per_worker": args.threads, "max_batch_size": args.max_batch_size,
            "max_wait_ms": args.max_wait_ms, "partitions": args.partitions,
            "outstanding": args.outstanding, "rounds": args.rounds,
            "measure_s": args.measure_s, "limit_s": args.limit_s, "open_s": args.open_s,
            "warmup_s": args.warmup_s, "fractions": list(args.fractions),
            "echo_requests": args.echo_requests, "quick": args.quick,
            "search_depth": args.search_depth, "probe_s": args.probe_s,
        },
        "workdir": str(workdir),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning", "console")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    workdir = Path(tempfile.mkdtemp(prefix="inferpool-bench-"))
    command = "python -m ops.bench.run" + "".join(
        f" {shlex.quote(arg)}" for arg in (sys.argv[1:] if argv is None else argv))
    runs: list[tuple[argparse.Namespace, Topology]] = []
    if args.topology in ("both", "shared"):
        runs.append((args, SHARED))
    if args.topology in ("both", "pinned"):
        runs.append((pinned_args(args), pinned()))
    progress = Progress(sum(count_steps(run_args) for run_args, _ in runs))
    started = time.perf_counter()
    failed: BaseException | None = None
    results: list[dict[str, Any]] = []
    try:
        for run_args, topology in runs:
            result = new_result(run_args, command, workdir / topology.name)
            results.append(result)
            run_started = time.perf_counter()
            try:
                asyncio.run(Bench(run_args, progress, result, workdir / topology.name,
                                  topology).run())
            finally:
                result["wall_s"] = time.perf_counter() - run_started
                add_ratios(result)
                add_targets(result)
    except (Exception, KeyboardInterrupt) as error:
        failed = error
        results[-1].setdefault("failures", {})["run"] = f"{type(error).__name__}: {error}"
    finally:
        progress.close()
    result = results[0]
    if len(results) > 1:
        result["pinned"] = results[1]
    result["wall_s_all"] = time.perf_counter() - started
    stem = args.out / f"bench-{'quick-' if args.quick else ''}{stamp}"
    paths = write_all(result, stem)
    print(paths["md"].read_text(encoding="utf-8"))
    print("\n".join(f"{kind}: {path}" for kind, path in paths.items()), file=sys.stderr)
    print(f"logs: {workdir}", file=sys.stderr)
    if failed is not None:
        print(f"the run failed: {failed!r}; see the logs in {workdir}", file=sys.stderr)
    failures = any(r.get("failures") for r in results)
    return 1 if failed is not None or failures else 0


if __name__ == "__main__":
    sys.exit(main())
