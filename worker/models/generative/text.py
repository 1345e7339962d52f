"""TextAssembler: a sequence's generated tokens as stable text, delta by delta.

A token is often part of a character (byte-level BPE splits multi-byte characters), and a
token's text can depend on the tokens after it (a leading space, a merge). So the newest
tokens are decoded together with a few before them, and text is released only when the
decoding of the window no longer ends in U+FFFD (an incomplete character). Text that could
be the start of a stop string is held back until it is known not to be; a stop string,
once complete, ends the text before it. The final text is exactly the concatenation of the
released deltas.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


class TextAssembler:
    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = stop
        self._ids: list[int] = []
        self._prefix_offset = 0  # decode from here, for context
        self._read_offset = 0  # tokens before this are already in _text
        self._text = ""  # stable text so far (stop strings cut off)
        self._released = 0  # characters of _text handed out as deltas
        self.stopped = False  # a stop string was produced

    def _decode(self, ids: list[int]) -> str:
        text: str = self._tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def add(self, token_id: int) -> None:
        """Append a generated token (never the end-of-sequence token)."""
        if self.stopped:
            return
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix_offset : self._read_offset])
        after = self._decode(self._ids[self._prefix_offset :])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self._text += after[len(before) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            self._cut_at_stop()

    def _cut_at_stop(self) -> None:
        if not self._stop:
            return
        window = max(len(s) for s in self._stop) + len(self._text) - self._released
        start = max(0, len(self._text) - window)
        found = [i for s in self._stop if (i := self._text.find(s, start)) >= 0]
        if found:
            self._text = self._text[: max(min(found), self._released)]
            self.stopped = True

    def _held(self) -> int:
        """Characters at the end of the text that could begin a stop string."""
        held = 0
        for stop in self._stop:
            for length in range(min(len(stop) - 1, len(self._text)), held, -1):
                if self._text.endswith(stop[:length]):
                    held = length
                    break
        return held

    def delta(self) -> str:
        """The stable text produced since the last call."""
        end = len(self._text) if self.stopped else len(self._text) - self._held()
        end = max(end, self._released)
        piece = self._text[self._released : end]
        self._released = end
        return piece

    def finish(self) -> str:
        """The rest of the text at the end of the generation (an incomplete last character
        included, as U+FFFD), held-back text included unless a stop string ended it."""
        if not self.stopped and self._read_offset < len(self._ids):
            before = self._decode(self._ids[self._prefix_offset : self._read_offset])
            after = self._decode(self._ids[self._prefix_offset :])
            self._text += after[len(before) :]
            self._read_offset = len(self._ids)
            self._cut_at_stop()
        piece = self._text[self._released :]
        self._released = len(self._text)
        return piece

    @property
    def text(self) -> str:
        """Everything released so far."""
        return self._text[: self._released]
