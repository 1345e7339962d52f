"""Admission at submit: refuse, before publishing, a request that the pool's load says
cannot finish by its deadline (``AdmissionRefused``, retriable, naming the predicted wait)."""

from __future__ import annotations

from inferpool.errors import AdmissionRefused
from inferpool.logs import get_logger
from inferpool.protocol import LoadSummary, Priority, now_ms, predicted_wait_s

log = get_logger("producer.admission")


def check_admission(
    request_id: str,
    model: str,
    priority: Priority,
    deadline_ms: int | None,
    summaries: list[LoadSummary],
) -> float:
    """The predicted wait in ms; raises AdmissionRefused when now plus it is past the
    deadline. A request without a deadline, or a model no worker reports on, is admitted."""
    wait_ms = predicted_wait_s(summaries, priority, now_ms()) * 1000
    if deadline_ms is None or not summaries:
        return wait_ms
    room_ms = deadline_ms - now_ms()
    if wait_ms > room_ms:
        log.info("producer.admission_refused", id=request_id, model=model,
                 predicted_wait_ms=round(wait_ms), room_ms=room_ms)
        raise AdmissionRefused(
            f"request {request_id} for model {model!r} ({priority.value} priority) would wait "
            f"about {wait_ms:.0f} ms but its deadline is {max(room_ms, 0)} ms away; it was not "
            "published: retry later, with a later deadline, or at a higher priority",
            predicted_wait_ms=wait_ms,
        )
    return wait_ms
