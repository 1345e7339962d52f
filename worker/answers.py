"""Answers: the ResultRecord each request ends with (ok, error, expired, cancelled or
rate_limited), and the Answer that settles its Kafka record."""

from __future__ import annotations

from typing import Any

from inferpool.errors import InferpoolError, PoisonRequest
from inferpool.protocol import ErrorInfo, ResultRecord, ResultStatus, Timings, now_ms
from worker.models.base import Model
from worker.request import Answer, PendingRequest, Rejection


def _end_to_end_ms(submitted_ms: int, finished_ms: int) -> float:
    return float(max(0, finished_ms - submitted_ms)) if submitted_ms else 0.0


def _queue_wait_ms(request: PendingRequest) -> float:
    submitted = request.envelope.submitted_ms
    return float(max(0, request.fetched_ms - submitted)) if submitted else 0.0


def poison_error(attempts: int, max_attempts: int) -> PoisonRequest:
    return PoisonRequest(
        f"the record was attempted {attempts} times and each attempt ended its worker (a "
        "crash or a hang while it was being read, prepared or run); it was moved to the "
        f"dead-letter topic (INFERPOOL_MAX_ATTEMPTS={max_attempts})"
    )


class Answers:
    """Builds results, stamped with this worker's id."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id

    def for_output(
        self,
        request: PendingRequest,
        model: Model,
        output: Any,
        batch_size: int,
        batch_started: float,
        inference_s: float,
    ) -> ResultRecord:
        finished = now_ms()
        timings = Timings(
            queue_wait_ms=_queue_wait_ms(request),
            batch_wait_ms=max(0.0, (batch_started - request.fetched_monotonic) * 1000),
            inference_ms=inference_s * 1000,
            end_to_end_ms=_end_to_end_ms(request.envelope.submitted_ms, finished),
        )
        common: dict[str, Any] = {
            "id": request.id,
            "model": model.name,
            "model_version": model.version,
            "worker": self.worker_id,
            "batch_size": batch_size,
            "timings": timings,
            "finished_ms": finished,
            "trace": request.traceparent,
        }
        if isinstance(output, InferpoolError):
            return ResultRecord(
                status=ResultStatus.ERROR, error=ErrorInfo(output.code, str(output)), **common
            )
        return ResultRecord(status=ResultStatus.OK, outputs=output, **common)

    def expired(self, request: PendingRequest) -> ResultRecord:
        return self.not_run(
            request,
            ResultStatus.EXPIRED,
            "the request's deadline passed before it could run; "
            "submit it again with a later deadline",
        )

    def cancelled(self, request: PendingRequest) -> ResultRecord:
        return self.not_run(
            request, ResultStatus.CANCELLED,
            "a client cancelled the request (its cancel key was set) before it started; "
            "it was not run",
        )

    def rate_limited(self, request: PendingRequest, limit_per_s: float) -> ResultRecord:
        return self.not_run(
            request, ResultStatus.RATE_LIMITED,
            f"tenant {request.envelope.tenant!r} is over its rate limit of {limit_per_s:g} "
            "requests per second per worker (INFERPOOL_TENANT_RATE_LIMITS); it was not run: "
            "retry later, more slowly",
        )

    def not_run(self, request: PendingRequest, status: ResultStatus, message: str) -> ResultRecord:
        """The result of a request answered without running: its status is its error code."""
        finished = now_ms()
        return ResultRecord(
            id=request.id,
            status=status,
            error=ErrorInfo(status.value, message),
            model=request.model,
            worker=self.worker_id,
            timings=Timings(
                queue_wait_ms=_queue_wait_ms(request),
                end_to_end_ms=_end_to_end_ms(request.envelope.submitted_ms, finished),
            ),
            finished_ms=finished,
            trace=request.traceparent,
        )

    def rejected(self, rejection: Rejection) -> ResultRecord:
        assert rejection.request_id is not None
        return ResultRecord(
            id=rejection.request_id,
            status=ResultStatus.ERROR,
            error=ErrorInfo(rejection.error.code, str(rejection.error)),
            model=rejection.model,
            worker=self.worker_id,
            finished_ms=now_ms(),
            trace=rejection.traceparent,
        )

    # --- the Answers that settle records -------------------------------------------------

    def settles_output(
        self,
        request: PendingRequest,
        model: Model,
        output: Any,
        batch_size: int,
        batch_started: float,
        inference_s: float,
    ) -> Answer:
        record = self.for_output(request, model, output, batch_size, batch_started, inference_s)
        return Answer(request.token, record, request.encoding)

    def settles_expired(self, request: PendingRequest) -> Answer:
        return Answer(request.token, self.expired(request), request.encoding)

    def settles_cancelled(self, request: PendingRequest) -> Answer:
        return Answer(request.token, self.cancelled(request), request.encoding)

    def settles_rate_limited(self, request: PendingRequest, limit_per_s: float) -> Answer:
        return Answer(request.token, self.rate_limited(request, limit_per_s), request.encoding)

    def settles_rejected(self, rejection: Rejection) -> Answer:
        """An error result under the record's id (when it has one) and a dead-letter copy."""
        record = self.rejected(rejection) if rejection.request_id is not None else None
        return Answer(rejection.token, record, rejection.encoding, rejection)
