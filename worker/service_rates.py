"""ServiceRates: how fast each model answers lately, for the load summaries.

Fed by every batch run (``WorkerMetrics.batch_ran``): requests answered, and running
averages of batch time and batch size. ``sample`` turns the answers since the last sample
into a rate. A pure unit: time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

_EWMA_WEIGHT = 0.3


@dataclass(slots=True)
class _ModelRate:
    answered: int = 0
    batch_s: float = 0.0
    batch_size: float = 0.0
    sampled_answered: int = 0
    sampled_at: float | None = None
    rate_per_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RateSample:
    rate_per_s: float  # answered per second lately (smoothed over samples)
    batch_ms: float  # recent batch time
    capacity_per_s: float  # recent batch size over recent batch time


def _ewma(old: float, new: float) -> float:
    return new if old == 0.0 else old + _EWMA_WEIGHT * (new - old)


class ServiceRates:
    def __init__(self) -> None:
        self._models: dict[str, _ModelRate] = {}

    def _model(self, model: str) -> _ModelRate:
        return self._models.setdefault(model, _ModelRate())

    def batch_ran(self, model: str, size: int, seconds: float) -> None:
        state = self._model(model)
        state.answered += size
        state.batch_s = _ewma(state.batch_s, seconds)
        state.batch_size = _ewma(state.batch_size, float(size))

    def sample(self, model: str, now: float) -> RateSample:
        state = self._model(model)
        if state.sampled_at is not None and now > state.sampled_at:
            recent = (state.answered - state.sampled_answered) / (now - state.sampled_at)
            state.rate_per_s = 0.5 * (state.rate_per_s + recent)
        state.sampled_answered, state.sampled_at = state.answered, now
        capacity = state.batch_size / state.batch_s if state.batch_s > 0 else 0.0
        return RateSample(state.rate_per_s, state.batch_s * 1000, capacity)
