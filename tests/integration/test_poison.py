"""A request that kills its worker every time ends, after max_attempts, on the dead-letter
topic with a poison_request error; its neighbours are answered; the partition moves on."""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

import pytest
from pool_helpers import WorkerProcess, collect, read_calls, read_topic

from inferpool.protocol import ResultKeys, ResultStatus
from inferpool.protocol.headers import ERROR_CODE_HEADER
from inferpool.settings import InferpoolSettings
from producer.client import Producer, SubmitRequest
from results.reader import ResultReader

pytestmark = pytest.mark.slow

MAX_ATTEMPTS = 2


@pytest.mark.parametrize(
    ("model", "env"),
    [
        ("exiting_echo", {}),  # the process dies in forward()
        ("prepare_killing_echo", {}),  # ... in prepare(), at admission
        ("hanging_echo", {"INFERPOOL_STAGE_TIMEOUT_S": "1"}),  # forward() never returns
    ],
)
async def test_a_poison_request_is_dead_lettered_after_max_attempts(
    settings: InferpoolSettings, tmp_path: Path, model: str, env: dict[str, str]
) -> None:
    settings = settings.model_copy(update={"request_topic_partitions": 1, "max_wait_ms": 50,
                                           "session_timeout_ms": 3000})
    inputs = [f"good-{i}" for i in range(10)] + ["poison"] + [f"good-{i}" for i in range(10, 20)]
    async with Producer(settings) as producer:
        ids = await producer.submit_many(SubmitRequest("echo", value) for value in inputs)
    poison_id = ids[inputs.index("poison")]
    workers: list[WorkerProcess] = []
    try:
        keys = ResultKeys(settings.result_key_prefix)
        async with ResultReader(settings.redis, keys, 0.2) as reader:
            for generation in range(MAX_ATTEMPTS + 2):  # a supervisor: restart what died
                worker = WorkerProcess(
                    settings, tmp_path, f"worker-{generation}", f"echo=testing_models:{model}",
                    {"INFERPOOL_MAX_ATTEMPTS": str(MAX_ATTEMPTS), **env},
                )
                workers.append(worker)
                worker.start()
                lookup_done = False
                while worker.process is not None and worker.process.poll() is None:
                    if (await reader.get(poison_id)).record is not None:
                        lookup_done = True
                        break
                    await worker_exit_or_timeout(worker, 0.2)
                if lookup_done:
                    break
        results = await collect(settings, ids, timeout_s=60)
        dead = await read_topic(settings, settings.dead_letter_topic, 1)
    finally:
        for worker in workers:
            worker.kill()
    poison = results[poison_id]
    assert poison.status is ResultStatus.ERROR and poison.error is not None
    assert poison.error.code == "poison_request"
    others = {r.outputs: (r.status, r.error) for i, r in results.items() if i != poison_id}
    bad = {k: v for k, v in others.items() if v[0] is not ResultStatus.OK}
    assert not bad, {i: (r.status, r.error, r.worker) for i, r in results.items()
                     if i != poison_id and r.status is not ResultStatus.OK} | {"poison": poison_id}
    assert dict(dead[0].headers)[ERROR_CODE_HEADER] == b"poison_request"
    calls = Counter(read_calls(workers[0].call_log))
    assert calls["poison-attempt"] == MAX_ATTEMPTS  # never run again after the limit
    assert all(calls[value] >= 1 for value in inputs if value != "poison")
    assert len(workers) <= MAX_ATTEMPTS + 1


async def worker_exit_or_timeout(worker: WorkerProcess, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await worker.wait_exit(timeout_s=seconds)
