"""LoadSummary: what one worker says about one model's load, for admission at submit.

Each worker writes one summary per model every ``load_report_interval_ms`` into the hash
``ResultKeys.load(model)`` (field: the worker id; value: this JSON object), and the hash
expires unless refreshed. A producer sums the fresh summaries of every worker to predict a
new request's wait (``predicted_wait_s``). See docs/protocol.md, "Load summaries".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from inferpool.errors import MalformedRequest
from inferpool.protocol.lanes import Priority


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """``backlog``: per lane, requests published and not yet answered (the Kafka lag of the
    lane's partitions this worker holds, held requests included); ``rate_per_s``: requests
    of the model answered per second lately; ``batch_ms``: its recent batch time;
    ``capacity_per_s``: what it answers per second when saturated (mean batch size over
    batch time); ``updated_ms``: when it was written (epoch ms)."""

    worker: str
    backlog: dict[str, int] = field(default_factory=dict)
    rate_per_s: float = 0.0
    batch_ms: float = 0.0
    capacity_per_s: float = 0.0
    updated_ms: int = 0

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def decode(cls, raw: bytes | str) -> LoadSummary:
        try:
            fields: Any = json.loads(raw)
            return cls(
                worker=str(fields["worker"]),
                backlog={str(k): int(v) for k, v in dict(fields.get("backlog") or {}).items()},
                rate_per_s=float(fields.get("rate_per_s", 0.0)),
                batch_ms=float(fields.get("batch_ms", 0.0)),
                capacity_per_s=float(fields.get("capacity_per_s", 0.0)),
                updated_ms=int(fields.get("updated_ms", 0)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise MalformedRequest(f"a load summary is not valid: {error}") from None

    def ahead_of(self, priority: Priority) -> int:
        """Requests of this worker a new request of ``priority`` waits behind: those of its
        own lane and of the lanes served before it."""
        return sum(self.backlog.get(p.value, 0) for p in Priority if p.rank <= priority.rank)


def predicted_wait_s(
    summaries: list[LoadSummary], priority: Priority, now_ms: int | None = None
) -> float:
    """How long a new request of ``priority`` waits for its answer, by the pool's summaries:
    the requests ahead of it over the pool's service rate, plus one batch time. The rate is
    a worker's recent answers per second, or its capacity when that is higher (a worker
    that was idle has answered little lately but serves at capacity once it has work). With
    ``now_ms``, each worker's backlog is aged: what it has served at that rate since its
    summary was written no longer counts. A pool that has not run a batch yet has no rate:
    its prediction is 0 (admitted)."""
    if not summaries:
        return 0.0
    ahead = 0.0
    rate = 0.0
    for summary in summaries:
        worker_rate = max(summary.rate_per_s, summary.capacity_per_s)
        age_s = 0.0 if now_ms is None else max(0, now_ms - summary.updated_ms) / 1000
        ahead += max(0.0, summary.ahead_of(priority) - worker_rate * age_s)
        rate += worker_rate
    batch_s = max(s.batch_ms for s in summaries) / 1000
    if ahead == 0 or rate <= 0:
        return batch_s
    return ahead / rate + batch_s
