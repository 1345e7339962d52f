"""The peer: a Celery worker doing the pool's job the usual Celery way — one text per task,
Redis as broker and result backend, ``acks_late``, JSON — on the same model.

Each prefork child loads MiniLM once (``worker_process_init``) with its own torch thread
count and runs the same ``TextEmbeddingModel`` path as a worker, at batch size 1: prepare
(tokenize), collate, forward; the embedding goes back as a JSON list of floats.

The worker is started as ``python -m celery -A ops.bench.celery_peer:app --broker URL
--result-backend URL worker ...`` against a redis-server of its own. The load generator
sends with a Celery client that has no result backend (so it keeps no subscription of its
own), and sees each result the moment the backend stores it: the backend's ``SET`` is
followed by a ``PUBLISH`` of the same value on the key's name, the message
``AsyncResult.get()`` waits for; one pattern subscription hears them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from inferpool.embedded import EmbeddedRedis
from ops.bench.stats import Completion
from ops.bench.target import WatchedTarget

REPO_ROOT = Path(__file__).resolve().parents[2]
QUEUE = "bench"
TASK = "bench.embed"
META_PREFIX = "celery-task-meta-"
PREFETCH_MULTIPLIER = 4  # Celery's default, and the best layout BASELINES found
THREADS_ENV = "BENCH_PEER_THREADS"
PRECISION_ENV = "BENCH_PEER_PRECISION"
READY_DIR_ENV = "BENCH_PEER_READY_DIR"

CONFIG: dict[str, Any] = {
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "task_acks_late": True,
    "task_default_queue": QUEUE,
    "worker_prefetch_multiplier": PREFETCH_MULTIPLIER,
    "worker_proc_alive_timeout": 300,  # a child loads and checks the model before it serves
    "result_expires": 3600,
    "broker_connection_retry_on_startup": True,
}

app = Celery("inferpool_bench_peer")
app.conf.update(CONFIG)

_model: Any = None


@worker_process_init.connect
def _load_model(**_: Any) -> None:
    """In each prefork child: set its torch threads, load and warm the model, say so."""
    global _model
    import torch

    from inferpool.logs import configure_logging
    from worker.models import minilm
    from worker.models.precision import Precision

    configure_logging("warning", "json")
    torch.set_num_threads(int(os.environ.get(THREADS_ENV, "1")))
    started = time.perf_counter()
    _model = minilm.create(precision=Precision(os.environ.get(PRECISION_ENV, "int8")),
                           device="cpu", warmup_batch_sizes=(1,))
    _model.warmup()
    ready_dir = os.environ.get(READY_DIR_ENV)
    if ready_dir:
        Path(ready_dir, f"{os.getpid()}.ready").write_text(json.dumps({
            "precision": _model.precision.value, "load_s": time.perf_counter() - started,
            "threads": torch.get_num_threads(),
        }))


@app.task(name=TASK, acks_late=True)
def embed(text: str) -> list[float]:
    model = _model
    outputs = model.forward(model.collate(model.prepare([text])))
    row: list[float] = outputs[0].tolist()
    return row


class CeleryPeer:
    """A redis-server and a Celery worker (``processes`` prefork children of ``threads``
    torch threads each); ``with`` starts both and waits until every child has its model."""

    def __init__(self, processes: int, threads: int, precision: str, workdir: Path) -> None:
        self.processes = processes
        self.threads = threads
        self.precision = precision
        self.workdir = workdir
        self.redis = EmbeddedRedis(workdir=workdir / "celery-redis")
        self.log_path = workdir / "celery-worker.log"
        self._ready_dir = workdir / "celery-ready"
        self._process: subprocess.Popen[bytes] | None = None
        self.children_info: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return self.redis.url

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, timeout_s: float = 300.0) -> None:
        self.redis.workdir.mkdir(parents=True, exist_ok=True)
        self._ready_dir.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        env = dict(os.environ)
        env.update({THREADS_ENV: str(self.threads), PRECISION_ENV: self.precision,
                    READY_DIR_ENV: str(self._ready_dir),
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                env.get("PYTHONPATH")]))})
        command = [sys.executable, "-m", "celery", "-A", "ops.bench.celery_peer:app",
                   "--broker", self.url, "--result-backend", self.url, "worker",
                   "--pool", "prefork", "--concurrency", str(self.processes),
                   "--prefetch-multiplier", str(PREFETCH_MULTIPLIER), "--queues", QUEUE,
                   "--without-gossip", "--without-mingle", "--without-heartbeat",
                   "--hostname", f"bench-peer-{os.getpid()}@%h",
                   "--loglevel", "WARNING", "--logfile", str(self.log_path)]
        with (self.workdir / "celery-stdout.log").open("wb") as out:
            self._process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=out,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout_s
        while len(ready := list(self._ready_dir.glob("*.ready"))) < self.processes:
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Celery worker did not start; see {self.log_path} and "
                                   f"{self.workdir / 'celery-stdout.log'}")
            time.sleep(0.2)
        self.children_info = [json.loads(path.read_text()) for path in ready]

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)  # warm shutdown: the main process
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.redis.stop()

    def __enter__(self) -> CeleryPeer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class CeleryTarget(WatchedTarget):
    """The peer as a load target. Sends from one thread (a Celery client is not meant to be
    shared between threads); reads results from a pattern subscription."""

    system = "celery"

    def __init__(self, redis_url: str) -> None:
        super().__init__()
        self._url = redis_url
        self._client = Celery("inferpool_bench_client", broker=redis_url)
        self._client.conf.update(CONFIG)
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="celery-send")

    async def __aenter__(self) -> CeleryTarget:
        from redis.asyncio import Redis

        await self._watch(Redis.from_url(self._url), f"{META_PREFIX}*")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._unwatch()
        await asyncio.to_thread(self._sender.shutdown)
        self._client.close()

    async def send(self, texts: Sequence[str], due: Sequence[float]) -> None:
        ids = [uuid.uuid4().hex for _ in texts]
        for task_id, at in zip(ids, due, strict=True):
            self._pending[task_id] = at
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._sender, self._send_all, list(texts), ids)

    def _send_all(self, texts: list[str], ids: list[str]) -> None:
        for text, task_id in zip(texts, ids, strict=True):
            self._client.send_task(TASK, args=[text], task_id=task_id, queue=QUEUE)

    async def _read(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(timeout=0.2)
            done: list[Completion] = []
            while message is not None:
                if message["type"] == "pmessage":
                    completion = self._completion(message["channel"], message["data"])
                    if completion is not None:
                        done.append(completion)
                message = await pubsub.get_message(timeout=0)
            if done:
                self.completed.put_nowait(done)

    def _completion(self, channel: bytes, data: bytes) -> Completion | None:
        seen_at = time.perf_counter()
        task_id = channel.decode()[len(META_PREFIX):]
        due = self._pending.pop(task_id, None)
        if due is None:
            return None
        status = json.loads(data).get("status")
        if status not in ("SUCCESS", "FAILURE"):  # e.g. STARTED, when tracked: not the end
            self._pending[task_id] = due
            return None
        return Completion(sent_at=due, seen_at=seen_at, ok=status == "SUCCESS")
