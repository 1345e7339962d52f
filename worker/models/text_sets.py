"""The built-in text sets of the int8 accuracy guard: diverse evaluation texts by category,
a disjoint calibration set, and query/passage pairs for the retrieval check.

The texts live in ``text_sets.json`` next to this module (written by
``ops/build_text_sets.py``; every text was written for this project). Categories: short
queries and replies, punctuation and single tokens, code, log lines and stack traces,
URLs/e-mail/phone/addresses, numbers/money/dates, product titles, 18 languages in 9
scripts, emoji and slang, all-caps, repeated words, and 150-256-token paragraphs.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RetrievalPair", "TextSets", "load", "stratified"]

_PATH = Path(__file__).with_name("text_sets.json")


@dataclass(frozen=True, slots=True)
class RetrievalPair:
    category: str
    query: str
    passage: str


@dataclass(frozen=True, slots=True)
class TextSets:
    evaluation: dict[str, tuple[str, ...]]
    calibration: dict[str, tuple[str, ...]]
    retrieval: tuple[RetrievalPair, ...]

    def calibration_texts(self) -> list[str]:
        return [text for texts in self.calibration.values() for text in texts]


@functools.cache
def load() -> TextSets:
    raw = json.loads(_PATH.read_text(encoding="utf-8"))
    return TextSets(
        evaluation={name: tuple(texts) for name, texts in raw["evaluation"].items()},
        calibration={name: tuple(texts) for name, texts in raw["calibration"].items()},
        retrieval=tuple(RetrievalPair(**pair) for pair in raw["retrieval"]),
    )


def stratified(
    per_category: int, limits: Mapping[str, int] | None = None
) -> dict[str, tuple[str, ...]]:
    """A fixed sample of the evaluation set: every category's first ``per_category`` texts
    (the order in the file is already shuffled), or fewer where ``limits`` says so."""
    limits = limits or {}
    return {name: texts[: min(per_category, limits.get(name, per_category))]
            for name, texts in load().evaluation.items()}
