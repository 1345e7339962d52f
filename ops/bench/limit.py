"""The limit: the model alone, in a tight batched loop, in the pool's own layout (as many
processes as workers, as many torch threads each), at the pool's max_batch_size.

Each batch goes the way a worker takes it: ``prepare`` (tokenize), ``collate``, ``forward``,
``split``; its sentences are of near-equal token counts (the least padding, as the pool's
batcher aims for), so that the limit is what the model can do at best. The processes load
and warm up once; then, as often as the harness asks, all start together and count what
they embed in a given time: the limit is the sum of their rates.

Run by the harness (``LimitRunner``) as ``python -m ops.bench.limit --threads T --batch B``;
each line it writes to the process's input is one run's length in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.bench.cpu import process_cpu_s

REPO_ROOT = Path(__file__).resolve().parents[2]
TEXT_SEED = 2024
TEXT_COUNT = 1024


def bench_texts() -> list[str]:
    """The sentences every measurement sends (the same ones, in the same order)."""
    from worker.models.calibration import sentences

    return sentences(TEXT_COUNT, TEXT_SEED)


@dataclass(frozen=True, slots=True)
class LimitResult:
    processes: int
    threads: int
    batch_size: int
    precision: str
    requests_per_s: float  # all processes together
    batch_ms_median: float  # one full batch, in one process
    batch_ms_p90: float
    seconds: float
    cpu_us_per_request: float | None  # CPU of the limit processes (all threads) / request


class LimitRunner:
    """The limit processes, loaded once and run as often as asked (so that the limit can be
    measured between the pool's and the peer's runs, under the same machine noise).

    ``with LimitRunner(...) as runner: runner.run(15)``.
    """

    def __init__(self, processes: int, threads: int, batch: int, precision: str,
                 log_path: Path) -> None:
        self.processes, self.threads, self.batch = processes, threads, batch
        self._command = [sys.executable, "-m", "ops.bench.limit", "--threads", str(threads),
                         "--batch", str(batch), "--precision", precision]
        self._log_path = log_path
        self._children: list[subprocess.Popen[str]] = []
        self.precision = ""
        self.load_s = 0.0

    def start(self) -> None:
        with self._log_path.open("ab") as log:
            self._children = [
                subprocess.Popen(self._command, cwd=REPO_ROOT, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=log, text=True)
                for _ in range(self.processes)]
        ready = [_read_json(child) for child in self._children]
        self.precision = str(ready[0]["precision"])
        self.load_s = max(float(r["load_s"]) for r in ready)

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self._children]

    def run(self, seconds: float) -> LimitResult:
        """All processes start together and run for ``seconds``; their rates add up."""
        cpu_before = [process_cpu_s(child.pid) for child in self._children]
        for child in self._children:
            assert child.stdin is not None
            child.stdin.write(f"{seconds}\n")
            child.stdin.flush()
        done = [_read_json(child) for child in self._children]
        cpu_after = [process_cpu_s(child.pid) for child in self._children]
        items = sum(r["items"] for r in done)
        cpu_s = None if None in cpu_before + cpu_after else sum(
            a - b for a, b in zip(cpu_after, cpu_before, strict=True))  # type: ignore[operator]
        batch_ms = sorted(ms for result in done for ms in result["batch_ms"])
        return LimitResult(
            processes=self.processes,
            threads=self.threads,
            batch_size=self.batch,
            precision=self.precision,
            requests_per_s=sum(r["items"] / r["seconds"] for r in done),
            batch_ms_median=statistics.median(batch_ms),
            batch_ms_p90=batch_ms[int(0.9 * (len(batch_ms) - 1))],
            seconds=seconds,
            cpu_us_per_request=None if cpu_s is None or not items else cpu_s / items * 1e6,
        )

    def stop(self) -> None:
        for child in self._children:
            if child.stdin is not None:
                with contextlib.suppress(OSError):
                    child.stdin.close()  # end of input: the process exits
        for child in self._children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self._children = []

    def __enter__(self) -> LimitRunner:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _read_json(child: subprocess.Popen[str]) -> dict[str, Any]:
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        raise RuntimeError(f"a limit process exited (code {child.wait()}) without a result; "
                           "see its log")
    value: dict[str, Any] = json.loads(line)
    return value


def _serve(threads: int, batch: int, precision: str) -> None:
    import torch

    from inferpool.logs import configure_logging
    from worker.models import minilm
    from worker.models.precision import Precision

    configure_logging("warning", "json")
    torch.set_num_threads(threads)
    started = time.perf_counter()
    model = minilm.create(precision=Precision(precision), device="cpu", warmup_batch_sizes=())
    texts = bench_texts()
    # batches of near-equal lengths, the least padding: the best the pool's batcher (which
    # groups requests near in token count) could form, so that the limit is an upper bound
    lengths = [len(ids) for ids in model.prepare(texts)]
    texts = [text for _, text in sorted(zip(lengths, texts, strict=True))]
    slices = [texts[i : i + batch] for i in range(0, len(texts) - batch + 1, batch)]

    def one(index: int) -> None:
        chunk = slices[index % len(slices)]
        model.split(model.forward(model.collate(model.prepare(chunk))), len(chunk))

    for index in range(3):
        one(index)
    print(json.dumps({"precision": model.precision.value,
                      "load_s": time.perf_counter() - started}), flush=True)
    count = 0
    # each line from the harness is a run: "<seconds>"; the end of input ends the process
    for line in sys.stdin:
        seconds = float(line)
        times: list[float] = []
        began = time.perf_counter()
        while (now := time.perf_counter()) - began < seconds:
            one(count)
            count += 1
            times.append(time.perf_counter() - now)
        elapsed = time.perf_counter() - began
        print(json.dumps({"items": len(times) * batch, "seconds": elapsed,
                          "batch_ms": [t * 1000 for t in times]}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--precision", default="int8")
    args = parser.parse_args()
    _serve(args.threads, args.batch, args.precision)


if __name__ == "__main__":
    main()
