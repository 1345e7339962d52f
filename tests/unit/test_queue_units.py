"""Queue semantics, unit by unit: the request's new fields, rate limits, the lane gate,
the admission prediction, cancellation and rate limits through the real stages."""

from __future__ import annotations

import pytest
from stage_fakes import StageKit, request_record

from inferpool.errors import AdmissionRefused, ConfigurationError, InvalidRequest
from inferpool.protocol import (
    LoadSummary,
    Priority,
    RequestEnvelope,
    ResultStatus,
    lane_of_topic,
    lane_topic,
    lane_topics,
    now_ms,
    predicted_wait_s,
)
from inferpool.protocol.wire import pack_msgpack
from inferpool.settings import load_settings
from producer.admission import check_admission
from worker.admission.lane_gate import LaneGate
from worker.admission.rate_limits import TenantRateLimits
from worker.models.echo import EchoModel
from worker.offsets import OffsetTracker, TopicPartition
from worker.service_rates import ServiceRates


def test_priority_and_tenant_travel_and_are_checked() -> None:
    envelope = RequestEnvelope(id="a", model="m", inputs=1, priority=Priority.HIGH, tenant="t1")
    assert RequestEnvelope.decode(envelope.encode()) == envelope
    base = {"version": 1, "id": "a", "model": "m", "inputs": 1}
    for bad in ({"priority": "urgent"}, {"priority": 3}, {"tenant": ""}, {"tenant": "a b"},
                {"tenant": 7}):
        with pytest.raises(InvalidRequest):
            RequestEnvelope.decode(pack_msgpack(base | bad))
    assert RequestEnvelope.decode(pack_msgpack(base | {"priority": None})).priority is (
        Priority.NORMAL
    )


def test_lane_topics() -> None:
    assert [lane_topic("req", p) for p in Priority] == ["req.high", "req", "req.low"]
    assert [lane_of_topic(t) for t in ("req.high", "req", "req.low")] == list(Priority)
    assert lane_topics("req") == ["req.high", "req", "req.low"]
    for clash in ("req.high", "requests.model.low"):  # a model named x.high, say
        with pytest.raises(ConfigurationError, match="names the"):
            lane_topics(clash)


def test_tenant_settings_parse_and_refuse_nonsense() -> None:
    settings = load_settings(_env_file=None, tenant_shares="a=2, b=0.5",
                             tenant_rate_limits="a=10")
    assert settings.tenant_shares == {"a": 2.0, "b": 0.5}
    assert settings.tenant_rate_limits == {"a": 10.0}
    for bad in ("a", "a=0", "=1", "a=x"):
        with pytest.raises(ConfigurationError, match="TENANT_SHARES"):
            load_settings(_env_file=None, tenant_shares=bad)


def test_rate_limit_is_a_token_bucket_per_tenant() -> None:
    limits = TenantRateLimits({"a": 2.0})
    assert [limits.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert limits.allow("a", 0.4) is False  # 0.8 of a token
    assert limits.allow("a", 0.5) is True
    assert all(limits.allow(tenant, 0.5) for tenant in ("b", None) for _ in range(100))


def test_lane_gate_leaves_out_a_lane_at_its_share_until_it_has_room() -> None:
    tracker = OffsetTracker()
    low, high = TopicPartition("req.low", 0), TopicPartition("req.high", 0)
    normal = TopicPartition("req", 0)
    tracker.assign([low, high, normal])
    gate = LaneGate(tracker, 8, {Priority.LOW: 0.25})
    assert gate.open_partitions() is None  # every lane open: the fetch reads them all
    tokens = [tracker.track(low, offset) for offset in range(2)]
    for offset in range(6):
        tracker.track(high, offset)
    assert sorted(gate.open_partitions() or []) == sorted([high, normal])  # low holds 2 of 2
    tracker.answer(tokens[0])
    assert gate.open_partitions() is None
    lone = OffsetTracker()
    lone.assign([low])
    for offset in range(2):
        lone.track(low, offset)
    assert LaneGate(lone, 8, {Priority.LOW: 0.25}).open_partitions() == []  # nothing to read


def summary(normal: int, rate: float, batch_ms: float = 50, high: int = 0) -> LoadSummary:
    return LoadSummary("w", {"high": high, "normal": normal, "low": 1000}, rate, batch_ms,
                       rate, now_ms())


def test_prediction_counts_the_lanes_ahead_over_the_pool_rate() -> None:
    pool = [summary(100, 50.0), summary(100, 50.0, high=20)]
    assert predicted_wait_s(pool, Priority.HIGH) == pytest.approx(20 / 100 + 0.05)
    assert predicted_wait_s(pool, Priority.NORMAL) == pytest.approx(220 / 100 + 0.05)
    assert predicted_wait_s([], Priority.LOW) == 0.0
    with pytest.raises(AdmissionRefused) as refused:
        check_admission("r1", "m", Priority.NORMAL, now_ms() + 1000, pool)
    assert refused.value.retriable and refused.value.code == "admission_refused"
    assert refused.value.predicted_wait_ms == pytest.approx(2250, rel=0.01)
    assert check_admission("r2", "m", Priority.HIGH, now_ms() + 1000, pool) < 1000
    assert check_admission("r3", "m", Priority.NORMAL, None, pool) > 1000  # no deadline


def test_a_summary_written_a_while_ago_counts_what_was_served_since() -> None:
    old = LoadSummary("w", {"normal": 100}, 50.0, 0.0, 50.0, updated_ms=10_000)
    assert predicted_wait_s([old], Priority.NORMAL, now_ms=11_000) == pytest.approx(1.0)
    assert predicted_wait_s([old], Priority.NORMAL, now_ms=13_000) == 0.0
    assert predicted_wait_s([old], Priority.NORMAL) == pytest.approx(2.0)


def test_service_rates_sample_answers_per_second() -> None:
    rates = ServiceRates()
    rates.sample("m", 0.0)
    for _ in range(10):
        rates.batch_ran("m", 8, 0.05)
    sample = rates.sample("m", 1.0)
    assert sample.rate_per_s == pytest.approx(40.0)  # half of the 80/s seen: smoothed
    assert sample.batch_ms == pytest.approx(50.0)
    assert sample.capacity_per_s == pytest.approx(160.0)


async def test_a_cancelled_request_is_answered_cancelled_and_not_run() -> None:
    model = Recorder()
    kit = StageKit(model)
    async with kit.running():
        await kit.store.request_cancel("gone")
        kit.consumer.pending += [request_record("gone", "x", offset=0),
                                 request_record("kept", "y", offset=1)]
        results = await kit.results(["gone", "kept"])
    assert results["gone"].status is ResultStatus.CANCELLED
    assert results["kept"].status is ResultStatus.OK
    assert model.seen == ["y"]
    assert not kit.dead_letters.sent  # not a bad record: no dead-letter copy


async def test_a_tenant_over_its_rate_is_answered_rate_limited_at_once() -> None:
    model = Recorder()
    kit = StageKit(model, tenant_rate_limits={"busy": 1.0})
    async with kit.running():
        kit.consumer.pending += [
            request_record(f"b{i}", i, offset=i, tenant="busy") for i in range(3)
        ] + [request_record("other", "o", offset=3, tenant="calm")]
        results = await kit.results(["b0", "b1", "b2", "other"])
    statuses = {rid: r.status for rid, r in results.items()}
    assert statuses == {"b0": ResultStatus.OK, "b1": ResultStatus.RATE_LIMITED,
                        "b2": ResultStatus.RATE_LIMITED, "other": ResultStatus.OK}
    error = results["b1"].error
    assert error is not None and error.code == "rate_limited" and "busy" in error.message
    assert sorted(model.seen, key=str) == [0, "o"]
    assert kit.tracker.unanswered() == 0


class Recorder(EchoModel):
    def __init__(self) -> None:
        self.seen: list[object] = []

    def forward(self, batch: list[object]) -> list[object]:
        self.seen.extend(batch)
        return batch


def test_backlog_does_not_count_what_was_answered_out_of_order() -> None:
    tracker = OffsetTracker()
    partition = TopicPartition("req", 0)
    tracker.assign([partition])
    tokens = [tracker.track(partition, offset) for offset in range(10)]
    for token in tokens[1:]:  # all but the first answered
        tracker.answer(token)
    assert tracker.backlog(partition, end=25) == 1 + 15  # one held, 15 not yet fetched
    assert tracker.position(partition) == 0  # what the lag metric counts from
