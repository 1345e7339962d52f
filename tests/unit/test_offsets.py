"""The offset tracker alone: a commit never moves past an unanswered record."""

from __future__ import annotations

from worker.offsets import OffsetTracker, TopicPartition

P0 = TopicPartition("requests", 0)
P1 = TopicPartition("requests", 1)


def test_commit_point_stops_at_the_first_unanswered_record() -> None:
    tracker = OffsetTracker()
    tracker.assign([P0])
    tokens = [tracker.track(P0, offset) for offset in range(10, 15)]
    assert tracker.committable() == {}
    tracker.answer(tokens[1])
    tracker.answer(tokens[2])
    assert tracker.committable() == {}
    tracker.answer(tokens[0])
    assert tracker.committable() == {P0: 13}
    tracker.answer(tokens[4])
    assert tracker.committable() == {P0: 13}
    tracker.answer(tokens[3])
    assert tracker.committable() == {P0: 15}
    assert tracker.unanswered() == 0


def test_committed_offsets_are_not_offered_again() -> None:
    tracker = OffsetTracker()
    tracker.assign([P0, P1])
    tracker.answer(tracker.track(P0, 0))
    tracker.answer(tracker.track(P1, 7))
    offsets = tracker.committable()
    assert offsets == {P0: 1, P1: 8}
    tracker.committed(offsets)
    assert tracker.committable() == {}
    tracker.answer(tracker.track(P1, 8))
    assert tracker.committable() == {P1: 9}


def test_an_answer_from_an_earlier_assignment_is_ignored() -> None:
    tracker = OffsetTracker()
    tracker.assign([P0])
    stale = tracker.track(P0, 5)
    tracker.revoke([P0])
    tracker.assign([P0])
    fresh = tracker.track(P0, 5)
    tracker.answer(stale)
    assert tracker.committable() == {} and not tracker.is_current(stale)
    tracker.answer(fresh)
    assert tracker.committable() == {P0: 6}


def test_records_of_unassigned_partitions_are_never_committed() -> None:
    tracker = OffsetTracker()
    token = tracker.track(P1, 3)
    tracker.answer(token)
    assert tracker.committable() == {} and tracker.unanswered() == 0


def test_unanswered_counts_per_partition() -> None:
    tracker = OffsetTracker()
    tracker.assign([P0, P1])
    tracker.track(P0, 0)
    tracker.track(P0, 1)
    tracker.answer(tracker.track(P1, 0))
    assert tracker.unanswered() == 2
    assert tracker.unanswered([P1]) == 0
    assert tracker.committable([P0]) == {}
