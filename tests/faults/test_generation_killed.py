"""kill -9 of a worker in the middle of a generation (SmolLM2, real worker processes): the
request is answered once, by the partition's next owner, and its stream says it restarted."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from aiokafka.partitioner import murmur2
from fleet import Fleet, assignment, wait_until, worker_id
from pool_helpers import WorkerProcess, reader_for

from inferpool.protocol import ResultRecord, ResultStatus
from inferpool.protocol.generation import EntryType, StreamEntry
from inferpool.settings import InferpoolSettings
from producer.client import Producer

pytestmark = pytest.mark.slow

MODELS_TOML = """
[[models]]
name = "smollm2"
loader = "smollm2"
quantization = "none"
options = { max_running = 2, max_new_tokens = 48, max_prompt_tokens = 128 }
"""


def _worker(fleet: Fleet, name: str, models_file: Path) -> WorkerProcess:
    env = {"INFERPOOL_MODELS_FILE": str(models_file), "INFERPOOL_TORCH_THREADS": "1"}
    worker = WorkerProcess(fleet.settings, fleet.workdir, name, "smollm2", env)
    worker.start()
    fleet.workers.append(worker)
    return worker


def _id_for(partitions: set[int], count: int) -> str:
    """A request id that the producer's default partitioner (murmur2) sends to one of
    ``partitions``."""
    assert partitions, "the victim holds no partition"
    while True:
        request_id = uuid.uuid4().hex
        if (murmur2(request_id.encode()) & 0x7FFFFFFF) % count in partitions:
            return request_id


async def test_a_generation_killed_mid_way_restarts_on_the_next_owner(
    settings: InferpoolSettings, fleet: Fleet, tmp_path: Path
) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text(MODELS_TOML)
    # both load the model at once; the request goes to a partition of the victim's
    victim, rescuer = _worker(fleet, "victim", models_file), _worker(fleet, "rescuer", models_file)
    await fleet.settle(120)
    request_id = _id_for(assignment(victim) or set(), settings.request_topic_partitions)
    entries: list[tuple[str, StreamEntry]] = []
    async with Producer(settings) as producer, reader_for(settings) as reader:
        await producer.submit(
            "smollm2", "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", request_id=request_id,
            params={"raw": True, "max_new_tokens": 48}, timeout_ms=300_000,
        )

        async def victim_streams() -> bool:
            entries[:] = await reader.read_stream(request_id, "0", 0)
            return any(entry.type is EntryType.TOKENS for _, entry in entries)

        await wait_until(victim_streams, 60, "the victim to stream tokens")
        assert (await reader.get(request_id)).record is None
        victim.kill()  # SIGKILL in the middle of the generation
        before = await reader.read_stream(request_id, "0", 0)  # all the victim wrote
        items: list[StreamEntry | ResultRecord] = [
            item async for item in reader.stream(request_id, 180)
        ]
        stream = [entry for _, entry in await reader.read_stream(request_id, "0", 0)]
    result = items[-1]
    assert isinstance(result, ResultRecord) and result.status is ResultStatus.OK
    assert result.worker == worker_id(rescuer)
    # the stream: the victim's entries, one restart entry, then the rescuer's whole run
    assert stream[: len(before)] == [entry for _, entry in before]
    rest = stream[len(before) :]
    assert rest[0].type is EntryType.RESTART
    assert [e.type for e in rest].count(EntryType.RESTART) == 1
    assert rest[-1].type is EntryType.END and rest[-1].worker == worker_id(rescuer)
    rerun = [e for e in rest if e.type is EntryType.TOKENS]
    assert "".join(e.text for e in rerun) == result.outputs["text"]
    assert [e.seq for e in rerun] == list(range(len(rerun)))
    # what the reader got: deltas from the start, the restart, the new run, the one result
    assert sum(1 for item in items if isinstance(item, ResultRecord)) == 1
    kinds = [item.type for item in items if isinstance(item, StreamEntry)]
    assert EntryType.RESTART in kinds
