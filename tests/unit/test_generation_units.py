"""The step engine's pure parts, without a model: the scheduler's rows, stable text deltas
(multi-byte characters, stop strings), request checks, seeded sampling, stream entries."""

from __future__ import annotations

import pytest
import torch

from inferpool.errors import InvalidInput
from inferpool.protocol.generation import EntryType, FinishReason, StreamEntry
from worker.execution.scheduler import CacheOp, Scheduler
from worker.execution.sequence import Sequence
from worker.models.generative.options import GenerativeOptions
from worker.models.generative.request import SamplingParams, parse_request
from worker.models.generative.sampling import choose_tokens, new_generator
from worker.models.generative.text import TextAssembler


class ByteTokenizer:
    """One token per UTF-8 byte: a character of several bytes spans several tokens."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(ids).decode("utf-8", "replace")


def deltas(text: str, stop: tuple[str, ...] = ()) -> tuple[list[str], str, bool]:
    assembler = TextAssembler(ByteTokenizer(), stop)
    pieces = []
    for byte in text.encode():
        assembler.add(byte)
        pieces.append(assembler.delta())
    pieces.append(assembler.finish())
    return [p for p in pieces if p], assembler.text, assembler.stopped


def test_deltas_never_split_a_character() -> None:
    pieces, text, _ = deltas("héllo 你好 🙂")
    assert "".join(pieces) == text == "héllo 你好 🙂"
    assert all("\ufffd" not in piece for piece in pieces)
    assert "你" in pieces and "🙂" in pieces


def test_a_stop_string_ends_the_text_and_is_never_streamed() -> None:
    pieces, text, stopped = deltas("Answer: 42\nUser: more", stop=("\nUser:",))
    assert stopped and text == "Answer: 42" and "".join(pieces) == text
    pieces, text, stopped = deltas("a\nUs then", stop=("\nUser:",))  # a prefix, released
    assert not stopped and text == "a\nUs then" == "".join(pieces)


def test_requests_are_checked() -> None:
    options = GenerativeOptions(max_new_tokens=32)
    request = parse_request("hi", {"max_new_tokens": 1000, "stop": "x", "seed": 5}, options)
    assert request.max_new_tokens == 32 and request.stop == ("x",) and request.stream
    assert request.messages == (("user", "hi"),) and request.sampling.seed == 5
    assert parse_request("hi", {"raw": True}, options).prompt == "hi"
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert parse_request(chat, {}, options).messages == (("system", "be brief"), ("user", "hi"))
    for inputs, params in [(7, {}), ([{"role": "x", "content": "a"}], {}),
                           ("hi", {"temperature": -1}), ("hi", {"stop": [""]}),
                           ("hi", {"seed": "s"})]:
        with pytest.raises(InvalidInput):
            parse_request(inputs, params, options)


def test_a_seed_reproduces_its_samples() -> None:
    logits = torch.randn(3, 50)
    params = [SamplingParams(temperature=0.9, top_p=0.9, top_k=20, seed=11)] * 2 + [
        SamplingParams()
    ]

    def run() -> list[list[int]]:
        generators = [new_generator(p) for p in params]
        return [choose_tokens(logits, params, generators) for _ in range(5)]

    first, second = run(), run()
    assert first == second
    assert all(row[2] == int(logits[2].argmax()) for row in first)  # greedy row


def test_stream_entries_round_trip_as_string_fields() -> None:
    entry = StreamEntry(EntryType.END, 3, tokens=12, finish_reason=FinishReason.LENGTH,
                        worker="w")
    fields = entry.to_fields()
    assert all(isinstance(v, str) for v in fields.values())
    assert StreamEntry.from_fields({k.encode(): v.encode() for k, v in fields.items()}) == entry


def sequence(name: str, prompt: int = 4) -> Sequence:
    from worker.models.generative.request import GenerationRequest

    item = GenerationRequest(None, name, 8, SamplingParams(), (), True, tuple(range(prompt)))
    return Sequence(None, item, TextAssembler(ByteTokenizer()), None)  # type: ignore[arg-type]


def rows_hold(scheduler: Scheduler) -> None:
    assert [s.row for s in scheduler.running] == list(range(len(scheduler.running)))


def test_rows_stay_dense_as_sequences_start_finish_and_decode() -> None:
    scheduler = Scheduler(rows=4, prefill_budget=64)
    a, b, c = sequence("a"), sequence("b"), sequence("c")
    for s in (a, b):
        scheduler.start(s)
    plan = scheduler.plan()
    assert [s for s, _, _ in plan.prefill] == [a, b] and not plan.decode
    for s in (a, b):
        s.prefilled, s.generated = 4, [1]
    scheduler.prefilled(b)  # b completes first: it swaps into row 0
    scheduler.prefilled(a)
    assert scheduler.decoding == [b, a]
    assert scheduler.plan().ops == [CacheOp(1, 0, 4, swap=True)]
    scheduler.start(c)
    rows_hold(scheduler)
    scheduler.retire(b)  # a moves into row 0, c (prefilling) into row 1
    assert scheduler.decoding == [a] and scheduler.prefilling == [c]
    rows_hold(scheduler)
    assert [op.swap for op in scheduler.plan().ops] == [False, False]


def test_a_long_prompt_is_prefilled_in_chunks_of_the_budget() -> None:
    scheduler = Scheduler(rows=4, prefill_budget=32)
    long = sequence("long", prompt=100)
    scheduler.start(long)
    assert [(len(chunk), start) for _, chunk, start in scheduler.plan().prefill] == [(32, 0)]
    long.prefilled = 32
    assert scheduler.room() == 1  # a budget of 32 prefills two sequences at once, 16 each
    scheduler.start(sequence("short"))
    assert [(len(c), s) for _, c, s in scheduler.plan().prefill] == [(16, 32), (4, 0)]
    assert scheduler.room() == 0


def test_suspects_run_alone() -> None:
    scheduler = Scheduler(rows=4, prefill_budget=64)
    scheduler.start(sequence("a"))
    scheduler.suspects.append(object())  # type: ignore[arg-type]
    assert scheduler.room() == 0 and not scheduler.may_start_suspect()
    scheduler.retire(scheduler.running[0])
    assert scheduler.may_start_suspect()
