"""Helpers shared by the worker's integration tests (real broker, real Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import testing_models
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from inferpool.protocol import ResultKeys, ResultRecord
from inferpool.settings import InferpoolSettings, settings_environment
from results.reader import ResultReader
from worker.models.base import Model
from worker.models.registry import ModelRegistry
from worker.pool import Worker


@contextlib.asynccontextmanager
async def running_worker(
    settings: InferpoolSettings, *models: Model, join_timeout_s: float = 20.0
) -> AsyncIterator[Worker]:
    """A started worker that has joined its group and holds partitions."""
    registry = ModelRegistry(models) if models else None
    async with Worker(settings, registry) as worker:
        await asyncio.wait_for(worker.assigned.wait(), join_timeout_s)
        yield worker


def reader_for(settings: InferpoolSettings) -> ResultReader:
    return ResultReader(settings.redis, ResultKeys(settings.result_key_prefix), poll_interval_s=0.2)


async def collect(
    settings: InferpoolSettings, ids: Iterable[str], timeout_s: float = 30.0
) -> dict[str, ResultRecord]:
    """Every result, by id; fails the test (ResultTimeout) if one is missing."""
    found: dict[str, ResultRecord] = {}
    async with reader_for(settings) as reader:
        async for record in reader.wait_many(list(ids), timeout_s):
            assert record.id not in found, f"{record.id} yielded twice"
            found[record.id] = record
    return found


async def read_topic(
    settings: InferpoolSettings, topic: str, count: int, timeout_s: float = 20.0
) -> list[Any]:
    """The first ``count`` records of ``topic``."""
    consumer = AIOKafkaConsumer(
        topic,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        **settings.kafka.client_options(),
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=200)
                records += [r for rs in batches.values() for r in rs]
    finally:
        await consumer.stop()
    return records


async def committed_total(settings: InferpoolSettings) -> int:
    """Sum of the group's committed offsets over every partition of the request topic
    (read with a consumer of the group that never joins it)."""
    consumer = AIOKafkaConsumer(
        group_id=settings.consumer_group,
        enable_auto_commit=False,
        **settings.kafka.client_options(),
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(settings.request_topic) or set()
        total = 0
        for partition in partitions:
            offset = await consumer.committed(TopicPartition(settings.request_topic, partition))
            total += offset or 0
        return total
    finally:
        await consumer.stop()


async def wait_until_committed(
    settings: InferpoolSettings, total: int, timeout_s: float = 20.0
) -> None:
    """Wait (polling the broker) until the group has committed ``total`` records."""
    async with asyncio.timeout(timeout_s):
        while await committed_total(settings) < total:
            await asyncio.sleep(0.1)


TESTS_DIR = Path(__file__).resolve().parent.parent


def worker_environment(settings: InferpoolSettings, models: str, call_log: Path) -> dict[str, str]:
    """The environment a worker process reads: the same settings, as INFERPOOL_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERPOOL_")}
    worker = settings.model_copy(update={"models": [models], "log_format": "json"})
    env.update(settings_environment(worker))
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    env[testing_models.CALL_LOG_ENV] = str(call_log)
    return env


class WorkerProcess:
    """``inferpool worker`` in a child process, its JSON log in a file."""

    def __init__(
        self,
        settings: InferpoolSettings,
        workdir: Path,
        name: str,
        models: str = "echo=testing_models:recording_echo",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.call_log = workdir / "calls.jsonl"
        self._env = worker_environment(settings, models, self.call_log) | (extra_env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "inferpool", "worker"],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    async def wait_for_event(
        self, name: str, timeout_s: float = 30.0, after: int = 0
    ) -> dict[str, Any]:
        """The first event called ``name`` past the ``after``-th event (polls the log)."""
        async with asyncio.timeout(timeout_s):
            while True:
                for event in self.events()[after:]:
                    if event.get("event") == name:
                        return event
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"{self.name} exited:\n{self.log_path.read_text()}")
                await asyncio.sleep(0.05)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait_exit(self, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        async with asyncio.timeout(timeout_s):
            while (code := self.process.poll()) is None:
                await asyncio.sleep(0.05)
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def read_calls(path: Path) -> list[Any]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
