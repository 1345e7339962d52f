"""The pool as a load target: requests go to Kafka through the project's own ``Producer``;
answers are seen the moment they are readable in Redis.

Reading answers: one pattern subscription on every done channel (``<prefix>:*:done``, which
the worker publishes right after its ``SET``), then one pipelined ``GET`` of the hinted
results. That costs the load generator far less than one ``ResultReader.wait_many`` per
request (a pubsub connection and a SUBSCRIBE per id), and a sweep re-reads requests that
have waited long, in case a notification was missed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from inferpool.protocol import ResultKeys, decode_result, new_request_id
from inferpool.settings import InferpoolSettings
from ops.bench.stats import Completion
from ops.bench.target import WatchedTarget
from producer.client import Producer, SubmitRequest
from results.redis_client import open_redis

SWEEP_AFTER_S = 2.0
SWEEP_EVERY_S = 1.0
SWEEP_MAX_IDS = 2000


class PoolTarget(WatchedTarget):
    """``async with PoolTarget(settings, "minilm")``: sends texts, reports completions."""

    system = "pool"

    def __init__(self, settings: InferpoolSettings, model: str) -> None:
        super().__init__()
        self._settings = settings
        self._model = model
        self._keys = ResultKeys(settings.result_key_prefix)
        self._producer = Producer(settings)

    async def __aenter__(self) -> PoolTarget:
        await self._producer.start()
        await self._watch(open_redis(self._settings.redis), f"{self._keys.prefix}:*:done")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._unwatch()
        await self._producer.stop()

    async def send(self, texts: Sequence[str], due: Sequence[float]) -> None:
        requests = []
        for text, at in zip(texts, due, strict=True):
            request_id = new_request_id()
            self._pending[request_id] = at  # before sending: the answer may beat the ack
            requests.append(SubmitRequest(self._model, text, request_id=request_id))
        await self._producer.submit_many(requests)

    async def _read(self, pubsub: Any) -> None:
        next_sweep = time.perf_counter() + SWEEP_EVERY_S
        while True:
            hinted: list[str] = []
            message = await pubsub.get_message(timeout=0.2)
            while message is not None:
                if message["type"] == "pmessage":
                    hinted.append(_request_id(message["channel"]))
                message = await pubsub.get_message(timeout=0)
            now = time.perf_counter()
            if now >= next_sweep:
                next_sweep = now + SWEEP_EVERY_S
                hinted += [rid for rid, due in list(self._pending.items())[:SWEEP_MAX_IDS]
                           if now - due > SWEEP_AFTER_S]
            if hinted:
                await self._fetch(hinted)

    async def _fetch(self, request_ids: list[str]) -> None:
        wanted = [rid for rid in dict.fromkeys(request_ids) if rid in self._pending]
        if not wanted:
            return
        assert self._redis is not None
        pipe = self._redis.pipeline(transaction=False)
        for rid in wanted:
            pipe.get(self._keys.result(rid))
        values = await pipe.execute()
        seen_at = time.perf_counter()
        done: list[Completion] = []
        for rid, raw in zip(wanted, values, strict=True):
            if raw is None or rid not in self._pending:
                continue
            record = decode_result(rid, raw)
            done.append(Completion(
                sent_at=self._pending.pop(rid),
                seen_at=seen_at,
                ok=record.ok,
                stamped_ms=record.timings.end_to_end_ms if record.ok else None,
                batch_size=record.batch_size or None,
                stages_ms={"queue": record.timings.queue_wait_ms,
                           "batch wait": record.timings.batch_wait_ms,
                           "inference": record.timings.inference_ms} if record.ok else None,
            ))
        if done:
            self.completed.put_nowait(done)


def _request_id(channel: bytes | str) -> str:
    """``<prefix>:{<id>}:done`` -> ``<id>``."""
    text = channel.decode() if isinstance(channel, bytes) else channel
    return text[text.index("{") + 1 : text.rindex("}")]
