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

    def collate(self, items: Sequence[Any]) -> Any:
        return list(items)

    def forward(self, batch: Any) -> Any:
        raise NotImplementedError

    def split(self, outputs: Any, count: int) -> Sequence[Any]:
        return list(outputs)
