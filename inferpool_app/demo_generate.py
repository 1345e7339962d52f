"""The demo of a generative model (``inferpool up --models smollm2 --demo N``): N questions
submitted at once (the workers batch them continuously), each answer streamed to the
terminal as it is made — one after the other, in the order asked, while the others go on
generating — then a summary of the pool's tokens/s and times to first token."""

from __future__ import annotations

import statistics
import time

from inferpool.protocol import ResultKeys, ResultRecord
from inferpool.settings import InferpoolSettings
from inferpool_app.streaming import print_stream
from producer.client import Producer, SubmitRequest
from results.reader import ResultReader

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "Give me three tips for a good night's sleep.",
    "What is 12 times 7?",
    "Why is the sky blue?",
    "Name a famous painter and one of their works.",
    "What language is spoken in Brazil?",
    "How many legs does a spider have?",
    "Suggest a name for a friendly robot.",
]
MAX_NEW_TOKENS = 64
WAIT_S = 600.0


async def generative_demo(settings: InferpoolSettings, model: str, count: int) -> None:
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(count)]
    print(f"demo: {count} questions for model {model!r}, streamed as they are answered\n")
    keys = ResultKeys(settings.result_key_prefix)
    async with Producer(settings) as producer, ResultReader(settings.redis, keys) as reader:
        started = time.perf_counter()
        ids = await producer.submit_many(
            SubmitRequest(model, q, params={"max_new_tokens": MAX_NEW_TOKENS, "stream": True})
            for q in questions
        )
        records: list[ResultRecord] = []
        for number, (question, request_id) in enumerate(zip(questions, ids, strict=True), 1):
            print(f"[{number}/{count}] {question}\n  ", end="", flush=True)
            records.append(await print_stream(reader.stream(request_id, WAIT_S)))
            print()
        elapsed = time.perf_counter() - started
    _summary(records, elapsed)


def _summary(records: list[ResultRecord], elapsed: float) -> None:
    outputs = [r.outputs for r in records if r.ok and isinstance(r.outputs, dict)]
    tokens = sum(o["completion_tokens"] for o in outputs)
    ttfts = sorted(
        r.timings.queue_wait_ms + r.timings.batch_wait_ms + (o["time_to_first_token_ms"] or 0)
        for r, o in zip(records, outputs, strict=False)
    )
    reasons: dict[str, int] = {}
    for o in outputs:
        reasons[o["finish_reason"]] = reasons.get(o["finish_reason"], 0) + 1
    print(f"answered {len(records)} in {elapsed:.1f}s: {tokens} tokens, "
          f"{tokens / elapsed:.1f} tokens/s over the pool")
    if ttfts:
        p99 = ttfts[min(len(ttfts) - 1, int(len(ttfts) * 0.99))]
        print(f"time to first token (submit to first token) ms: p50 "
              f"{statistics.median(ttfts):.0f}  p99 {p99:.0f}")
    print(f"finish reasons {reasons}; workers {len({r.worker for r in records})}")
