"""BulkHistogram exports exactly what prometheus_client's Histogram would."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from worker.histograms import BulkHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)


def samples(text: bytes) -> set[str]:
    return {line for line in text.decode().splitlines()
            if not line.startswith("#") and "_created" not in line}


def test_bulk_observations_export_as_one_by_one_observations_do() -> None:
    values = [random.Random(3).choice([0.0, 0.001, 0.5, 10.0, 99.0]) * random.Random(i).random()
              for i in range(500)] + [0.001, 0.01, 10.0]  # bounds themselves go in their bucket
    reference, bulk = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram("x_seconds", "x", ["model"], buckets=BUCKETS, registry=reference)
    for value in values:
        histogram.labels("m").observe(value)
    ours = BulkHistogram("x_seconds", "x", ["model"], BUCKETS, bulk)
    ours.observe_many(("m",), values[:100])
    ours.observe_many(("m",), values[100:])
    expected, got = samples(generate_latest(reference)), samples(generate_latest(bulk))
    sums = {line for line in expected | got if "_sum" in line}
    assert expected - sums == got - sums
    [expected_sum] = [float(line.split()[-1]) for line in expected if "_sum" in line]
    [got_sum] = [float(line.split()[-1]) for line in got if "_sum" in line]
    assert abs(expected_sum - got_sum) < 1e-9


def test_an_unobserved_histogram_exports_its_family_without_samples() -> None:
    registry = CollectorRegistry()
    BulkHistogram("y_seconds", "y", ["model"], BUCKETS, registry)
    text = generate_latest(registry).decode()
    assert "# TYPE y_seconds histogram" in text and "y_seconds_bucket" not in text
