"""PoisonScreen: what a batch must know right before it runs, read in one round trip:
which requests kill their worker (attempt counts) and which a client cancelled.

An attempt is counted right before a request runs and forgotten once its result is stored
(the result write deletes the count). So a count above one means an earlier run never
finished: its worker died (or hung). Such suspects run alone, so that a crash is not blamed
on their neighbours; past ``max_attempts`` a request is not run again.

A request whose cancel key is set (``Producer.cancel``) is answered ``cancelled`` and never
runs. Its flag is read by the same command that counts the batch's attempts
(``ResultStore.start_attempts``): reading it separately was a second round trip per batch
while the model waited.
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
    cancelled: list[PendingRequest] = field(default_factory=list)  # cancelled before they ran


class PoisonScreen:
    def __init__(self, sink: ResultSink, max_attempts: int) -> None:
        self._sink = sink
        self._max_attempts = max_attempts

    async def screen(self, requests: list[PendingRequest]) -> Screened:
        screened = Screened()
        if not requests:
            return screened
        counts, flags = await self._sink.start_attempts(
            [r.token.record_id for r in requests], [r.id for r in requests]
        )
        for request, count, cancelled in zip(requests, counts, flags, strict=True):
            if cancelled:
                screened.cancelled.append(request)
            elif count > self._max_attempts and request.record is not None:
                screened.poison.append(self._reject(request, count - 1))
            else:
                (screened.fresh if count <= 1 else screened.suspects).append(request)
        if screened.cancelled:
            log.info("request.cancelled", request_ids=[r.id for r in screened.cancelled])
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
