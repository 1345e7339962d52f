"""PoisonScreen: finds requests that kill their worker, using attempt counts in the result store.

An attempt is counted right before a request runs and forgotten once its result is stored
(the result write deletes the count). So a count above one means an earlier run never
finished: its worker died (or hung). Such suspects run alone, so that a crash is not blamed
on their neighbours; past ``max_attempts`` a request is not run again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inferpool.logs import get_logger
from worker.answers import poison_error
from worker.request import PendingRequest, Rejection
from worker.result_sink import ResultSink

log = get_logger("worker.poison")


@dataclass(slots=True)
class Screened:
    fresh: list[PendingRequest] = field(default_factory=list)  # first attempts: one batch
    suspects: list[PendingRequest] = field(default_factory=list)  # run alone, counted then
    poison: list[Rejection] = field(default_factory=list)  # never run again


class PoisonScreen:
    def __init__(self, sink: ResultSink, max_attempts: int) -> None:
        self._sink = sink
        self._max_attempts = max_attempts

    async def screen(self, requests: list[PendingRequest]) -> Screened:
        screened = Screened()
        if not requests:
            return screened
        counts = await self._sink.count_attempts([r.token.record_id for r in requests])
        for request, count in zip(requests, counts, strict=True):
            if count > self._max_attempts and request.record is not None:
                screened.poison.append(self._reject(request, count - 1))
            else:
                (screened.fresh if count <= 1 else screened.suspects).append(request)
        if screened.suspects:  # a suspect's attempt is counted again right before it runs
            suspects = [r.token.record_id for r in screened.suspects]
            await self._sink.count_attempts(suspects, delta=-1)
        return screened

    async def before_alone(self, suspect: PendingRequest) -> None:
        await self._sink.count_attempts([suspect.token.record_id])

    def _reject(self, request: PendingRequest, attempts: int) -> Rejection:
        error = poison_error(attempts, self._max_attempts)
        log.warning(
            "request.poison", request_id=request.id, attempts=attempts, trace=request.traceparent
        )
        return Rejection.of(request, error)
