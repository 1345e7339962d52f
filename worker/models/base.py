"""The model interface: what a worker needs from anything it serves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Model(Protocol):
    """A batchable model.

    ``validate`` runs on the event loop for each request as it arrives: it must be cheap,
    return the item that ``collate`` will receive, and raise ``InvalidInput`` for bad
    inputs (that request alone gets an error result). ``collate``, ``forward`` and
    ``split`` run together in the worker's model thread, once per batch; ``split`` must
    return exactly one output per item, in order.

    Optional hooks (``ListModel`` has defaults; the worker calls them when present):

    - ``prepare(items) -> list``: per fetched chunk, in the worker's preparation thread
      (off the event loop, overlapping the model): e.g. tokenization, done once. Each
      element is the prepared item, or an ``InferpoolError`` for that request alone.
    - ``cost(item) -> int``: the prepared item's weight in a batch (its token count), used
      to keep padding small and to cap a batch's tokens.
    - ``warmup() -> None``: called once at start, in the model thread, before the worker
      joins its group (it reports ready only after).
    """

    name: str
    version: str

    def validate(self, inputs: Any, params: Mapping[str, Any]) -> Any: ...

    def collate(self, items: Sequence[Any]) -> Any: ...

    def forward(self, batch: Any) -> Any: ...

    def split(self, outputs: Any, count: int) -> Sequence[Any]: ...


class ListModel:
    """Convenience base: the batch is the list of items, the outputs a list of the same length."""

    name = "model"
    version = "0"

    def validate(self, inputs: Any, params: Mapping[str, Any]) -> Any:
        return inputs

    def prepare(self, items: Sequence[Any]) -> list[Any]:
        return list(items)

    def cost(self, item: Any) -> int:
        return 1

    def warmup(self) -> None:
        return None

    def collate(self, items: Sequence[Any]) -> Any:
        return list(items)

    def forward(self, batch: Any) -> Any:
        raise NotImplementedError

    def split(self, outputs: Any, count: int) -> Sequence[Any]:
        return list(outputs)


def has_hook(model: Model, hook: str) -> bool:
    """Whether ``model`` does something of its own in an optional hook."""
    method = getattr(type(model), hook, None)
    return callable(method) and method is not getattr(ListModel, hook)
