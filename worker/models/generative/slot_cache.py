"""SlotCache: the attention keys and values of every running sequence, one row each.

Chosen over transformers' own continuous batching (``generate_batch`` /
``ContinuousBatchingManager`` with its paged cache) by measurement on the 2-core CPU this
project runs on (SmolLM2-135M, fp32, 1 thread, greedy, 32 new tokens, CPU time per token,
static batched ``generate()`` = 1.0): the manager reached 0.18x at 1 sequence, 0.25x at 4
and 0.36x at 16; a loop over this cache reached 0.96x, 0.97x and 1.11x. The manager's
paged attention gathers every block on every step and schedules from a thread of its own;
this cache keeps each sequence's keys in one contiguous row that the model's own SDPA
attention reads in place.

Layout: per layer, keys and values ``[slots, kv_heads, capacity, head_dim]``, zeroed
(attention multiplies masked positions by 0, so stale values must be finite). A forward
covers a contiguous range of rows; each of its tokens writes at its own position (a flat
``index_copy_``), so the rows of one forward may be at different lengths. Its attention
mask lets a query see the positions up to its own. The capacity grows (doubling, up to
``max_length``) as the longest sequence does, so memory follows what is in use.

The cache object is what the model's attention layers call ``update`` on (transformers'
``Cache`` protocol, duck-typed): ``plan`` tells it, before a forward, where the tokens go.
"""

from __future__ import annotations

from typing import Any

import torch

INITIAL_CAPACITY = 256


class SlotCache:
    def __init__(
        self,
        config: Any,
        slots: int,
        max_length: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        self.slots = slots
        self.max_length = max_length
        self.layers = int(config.num_hidden_layers)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        self.dtype, self.device = dtype, torch.device(device)
        self.capacity = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._grow(min(INITIAL_CAPACITY, max_length))
        self._index = torch.empty(0, dtype=torch.long)
        self._rows = slice(0, 0)
        self._view_length = 0

    # --- what the engine reads -----------------------------------------------------------

    def token_bytes(self) -> int:
        """Bytes one position of one row takes, over every layer, keys and values."""
        element = torch.empty((), dtype=self.dtype).element_size()
        return 2 * self.layers * self.kv_heads * self.head_dim * element

    def allocated_bytes(self) -> int:
        return self.slots * self.capacity * self.token_bytes()

    # --- before a forward ----------------------------------------------------------------

    def plan(self, first_row: int, positions: torch.Tensor) -> torch.Tensor:
        """The next forward covers rows ``first_row ..`` (one per row of ``positions``,
        ``[rows, tokens]``): each token writes at its position. Returns the attention mask
        (``[rows, 1, tokens, length]``, True where a query may look)."""
        rows = positions.shape[0]
        needed = int(positions.max()) + 1
        if needed > self.capacity:
            self._grow(needed)
        heads = torch.arange(self.kv_heads, device=self.device)[None, :, None]
        row_index = torch.arange(first_row, first_row + rows, device=self.device)[:, None, None]
        flat = (row_index * self.kv_heads + heads) * self.capacity + positions[:, None, :]
        self._index = flat.reshape(-1)
        self._rows = slice(first_row, first_row + rows)
        self._view_length = needed
        keys = torch.arange(needed, device=self.device)
        return (keys[None, None, :] <= positions[:, :, None])[:, None]

    # --- what the model's attention calls ----------------------------------------------

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
        *args: Any, **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        # [rows, heads, tokens, dim] -> one vector per (row, head, token), as the index is
        keys.view(-1, self.head_dim).index_copy_(
            0, self._index, key_states.reshape(-1, self.head_dim).to(self.dtype)
        )
        values.view(-1, self.head_dim).index_copy_(
            0, self._index, value_states.reshape(-1, self.head_dim).to(self.dtype)
        )
        length = self._view_length
        return keys[self._rows, :, :length], values[self._rows, :, :length]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._view_length

    # --- between steps -----------------------------------------------------------------

    def move(self, source: int, target: int, length: int) -> None:
        """Copy row ``source``'s first ``length`` positions to row ``target``."""
        if source == target or length <= 0:
            return
        for keys, values in zip(self.keys, self.values, strict=True):
            keys[target, :, :length] = keys[source, :, :length]
            values[target, :, :length] = values[source, :, :length]

    def swap(self, first: int, second: int, length: int) -> None:
        """Exchange the first ``length`` positions of two rows."""
        if first == second or length <= 0:
            return
        for keys, values in zip(self.keys, self.values, strict=True):
            for buffer in (keys, values):
                held = buffer[first, :, :length].clone()
                buffer[first, :, :length] = buffer[second, :, :length]
                buffer[second, :, :length] = held

    def _grow(self, needed: int) -> None:
        capacity = max(self.capacity, 1)
        while capacity < needed:
            capacity *= 2
        capacity = min(max(capacity, needed), self.max_length)
        if needed > capacity:
            raise ValueError(f"position {needed - 1} is past the cache's {self.max_length}")
        shape = (self.slots, self.kv_heads, capacity, self.head_dim)
        grown_keys, grown_values = [], []
        for index in range(self.layers):
            keys = torch.zeros(shape, dtype=self.dtype, device=self.device)
            values = torch.zeros(shape, dtype=self.dtype, device=self.device)
            if self.capacity:
                keys[:, :, : self.capacity] = self.keys[index]
                values[:, :, : self.capacity] = self.values[index]
            grown_keys.append(keys)
            grown_values.append(values)
        self.keys, self.values, self.capacity = grown_keys, grown_values, capacity


def run_forward(
    model: Any, cache: SlotCache, first_row: int, tokens: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """One forward of rows ``first_row ..`` (``tokens``/``positions`` ``[rows, n]``, each
    row's last real token in the last column); the logits there, ``[rows, vocab]``."""
    mask = cache.plan(first_row, positions)
    output = model(
        input_ids=tokens,
        position_ids=positions,
        attention_mask=mask,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    logits: torch.Tensor = output.logits[:, -1]
    return logits


def left_padded(
    chunks: list[list[int]], starts: list[int], pad_token: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefill chunks as one ``[rows, longest]`` batch, each right-aligned (its last token in
    the last column). A padding slot writes past the row's real tokens (positions that a
    later token overwrites before anything attends to them), so it changes nothing."""
    width = max(len(chunk) for chunk in chunks)
    tokens = torch.full((len(chunks), width), pad_token, dtype=torch.long)
    positions = torch.empty((len(chunks), width), dtype=torch.long)
    for row, (chunk, start) in enumerate(zip(chunks, starts, strict=True)):
        count, pad = len(chunk), width - len(chunk)
        tokens[row, pad:] = torch.tensor(chunk, dtype=torch.long)
        positions[row, pad:] = torch.arange(start, start + count)
        positions[row, :pad] = torch.arange(start + count, start + count + pad)
    return tokens, positions
