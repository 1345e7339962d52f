"""Results written per second, one Redis against a 3-primary Redis Cluster, same sitting.

The writer alone (``ResultWriter.write``, what a worker's settlement calls once per batch),
batches of 32 and 64 results whose outputs are 384 float32 values (a MiniLM embedding:
about 1.6 KB encoded), ``--concurrency`` batches in flight. For each backend and batch size:

- results/s and the batch's latency (median);
- network sends per batch (each a write followed by its replies, counted at redis-py's
  connection: one EVALSHA on one Redis; one pipeline per primary on the cluster, sent to all
  at once, so the batch waits for one round trip either way) and the commands sent;
- Redis CPU per result (all primaries together, from /proc), and what it means for one
  node: results/s one Redis core can take;
- memory per stored result (``used_memory`` growth / results; cluster: all primaries).

    python -m ops.bench.results_store [--seconds 5] [--concurrency 1] [--json FILE]

Prints a Markdown table and the cluster/single ratios. The servers are started here on free
loopback ports (no replicas: the cluster's primaries do the same work as the single Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis.asyncio.connection

from inferpool.embedded import EmbeddedRedis
from inferpool.embedded_ha import EmbeddedRedisCluster, info_field
from inferpool.protocol import ResultKeys, ResultRecord, ResultStatus, Timings
from inferpool.protocol.wire import Encoding, WireTensor
from inferpool.settings import RedisSettings
from ops.bench.cpu import process_cpu_s
from results import ResultWriter

EMBEDDING = WireTensor("float32", (384,), bytes(range(256)) * 6)
TTL_S = 3600
#: Results made ready per backend and size (a run stops early when they are used up).
MAX_RESULTS = 120_000


@dataclass(slots=True)
class Row:
    backend: str
    batch: int
    results_per_s: float
    batch_ms_p50: float
    sends_per_batch: float
    commands_per_batch: float
    redis_cpu_us_per_result: float | None
    results_per_s_per_redis_core: float | None
    bytes_per_result: float | None


class Sends:
    """Counts what redis-py writes to its sockets: sends and the commands in them."""

    def __init__(self) -> None:
        self.sends = 0
        self.commands = 0

    @contextmanager
    def counting(self) -> Iterator[None]:
        connection = redis.asyncio.connection.AbstractConnection
        send, pack = connection.send_packed_command, connection.pack_command

        async def counted_send(conn: Any, command: Any, check_health: bool = True) -> None:
            self.sends += 1
            await send(conn, command, check_health)

        def counted_pack(conn: Any, *args: Any) -> Any:
            self.commands += 1  # pipelines pack each of their commands with it too
            return pack(conn, *args)

        connection.send_packed_command = counted_send  # type: ignore[method-assign]
        connection.pack_command = counted_pack  # type: ignore[method-assign]
        try:
            yield
        finally:
            connection.send_packed_command = send  # type: ignore[method-assign]
            connection.pack_command = pack  # type: ignore[method-assign]


def batch_of(size: int) -> list[tuple[ResultRecord, Encoding]]:
    return [(ResultRecord(id=uuid.uuid4().hex, status=ResultStatus.OK,
                          outputs={"embedding": EMBEDDING}, model="minilm", worker="bench",
                          batch_size=size, timings=Timings(inference_ms=1.0),
                          finished_ms=1_700_000_000_000), Encoding.MSGPACK)
            for _ in range(size)]


def used_memory(ports: list[int]) -> int:
    return sum(int(info_field(port, "memory", "used_memory") or 0) for port in ports)


async def run(url: str, ports: list[int], pids: list[int], batch: int, seconds: float,
              concurrency: int, backend: str) -> Row:
    keys = ResultKeys(f"bench-{uuid.uuid4().hex[:8]}")
    sends = Sends()
    async with ResultWriter(RedisSettings(url=url), keys, ttl_s=TTL_S) as writer:
        await writer.write(batch_of(batch))  # connects, loads scripts / the slot map
        # fresh ids for every batch (a repeated id is not written again), made beforehand
        batches = [batch_of(batch) for _ in range(MAX_RESULTS // batch)]
        latencies: list[float] = []
        memory_before, cpu_before = used_memory(ports), sum(process_cpu_s(p) or 0 for p in pids)
        written = 0
        deadline = time.monotonic() + seconds

        async def one_writer() -> None:
            nonlocal written
            while batches and time.monotonic() < deadline:
                records = batches.pop()
                started = time.perf_counter()
                new = await writer.write(records)
                latencies.append(time.perf_counter() - started)
                written += new  # after the await: the writers share the count

        with sends.counting():
            started = time.monotonic()
            await asyncio.gather(*(one_writer() for _ in range(concurrency)))
            elapsed = time.monotonic() - started
        cpu = sum(process_cpu_s(p) or 0 for p in pids) - cpu_before
        memory = used_memory(ports) - memory_before
    count = len(latencies)
    cpu_us = cpu / written * 1e6 if written and cpu else None
    return Row(backend, batch, written / elapsed, statistics.median(latencies) * 1000,
               sends.sends / count, sends.commands / count, cpu_us,
               1e6 / cpu_us if cpu_us else None, memory / written if written else None)


def table(rows: list[Row]) -> str:
    lines = ["| backend | batch | results/s | batch p50 ms | sends/batch | commands/batch "
             "| Redis CPU µs/result | results/s per Redis core | bytes/result |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cpu = f"{r.redis_cpu_us_per_result:.1f}" if r.redis_cpu_us_per_result else "-"
        core = f"{r.results_per_s_per_redis_core:,.0f}" if r.results_per_s_per_redis_core else "-"
        memory = f"{r.bytes_per_result:,.0f}" if r.bytes_per_result else "-"
        lines.append(f"| {r.backend} | {r.batch} | {r.results_per_s:,.0f} | "
                     f"{r.batch_ms_p50:.2f} | {r.sends_per_batch:.2f} | "
                     f"{r.commands_per_batch:.2f} | {cpu} | {core} | {memory} |")
    return "\n".join(lines)


def ratios(rows: list[Row]) -> str:
    out = []
    for size in sorted({r.batch for r in rows}):
        single = next(r for r in rows if r.backend == "single" and r.batch == size)
        cluster = next(r for r in rows if r.backend == "cluster" and r.batch == size)
        out.append(f"batch {size}: cluster/single results/s "
                   f"{cluster.results_per_s / single.results_per_s:.2f}, sends/batch "
                   f"{cluster.sends_per_batch / single.sends_per_batch:.2f}, p50 latency "
                   f"{cluster.batch_ms_p50 / single.batch_ms_p50:.2f}")
    return "\n".join(out)


async def measure(seconds: float, concurrency: int, sizes: list[int]) -> list[Row]:
    rows: list[Row] = []
    with EmbeddedRedis() as single, EmbeddedRedisCluster(primaries=3, replicas=0) as cluster:
        try:
            ports = [node.port for node in cluster.nodes]
            pids = [node.pid for node in cluster.nodes]
            for size in sizes:  # interleaved: both backends see the same machine load
                rows.append(await run(single.url, [single.port], [single.pid], size, seconds,
                                      concurrency, "single"))
                rows.append(await run(cluster.url, ports, pids, size, seconds, concurrency,
                                      "cluster"))
        finally:
            single.cleanup()
            cluster.cleanup()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="per backend and size")
    parser.add_argument("--concurrency", type=int, default=1, help="batches in flight")
    parser.add_argument("--sizes", default="32,64", help="batch sizes, comma-separated")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    rows = asyncio.run(measure(args.seconds, args.concurrency, sizes))
    print(table(rows))
    print()
    print(ratios(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2))


if __name__ == "__main__":
    main()
