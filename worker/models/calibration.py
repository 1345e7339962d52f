"""Fixed English sentences, generated deterministically: the calibration set a text model
is checked against at load time, and evaluation sets for tests and benchmarks.

Different seeds give disjoint-looking sets; the same seed always gives the same set.
"""

from __future__ import annotations

import random

_SUBJECTS = [
    "The new warehouse manager",
    "A tired software engineer",
    "Our oldest customer",
    "The city council",
    "My neighbour's daughter",
    "The research team",
    "A local bakery",
    "The night shift nurse",
    "Every delivery driver",
    "The museum curator",
    "A young violinist",
    "The support engineer on call",
    "The football coach",
    "A retired teacher",
    "The hotel receptionist",
    "The data platform",
    "A small logistics company",
    "The weather service",
    "The bank's fraud team",
    "A group of students",
]
_VERBS = [
    "reviewed",
    "cancelled",
    "postponed",
    "celebrated",
    "questioned",
    "redesigned",
    "explained",
    "rejected",
    "approved",
    "described",
    "forgot",
    "repaired",
    "measured",
    "announced",
    "translated",
    "ordered",
    "compared",
    "summarised",
    "photographed",
    "tested",
]
_OBJECTS = [
    "the quarterly budget",
    "a broken refrigerator",
    "the late night train schedule",
    "an unusual insurance claim",
    "the spring marketing campaign",
    "a stack of old invoices",
    "the noisy ventilation system",
    "a recipe for lemon cake",
    "the customer satisfaction survey",
    "the results of the blood test",
    "an urgent software update",
    "the parking regulations",
    "a long list of complaints",
    "the new security policy",
    "the damaged shipping container",
    "a map of the hiking trails",
    "the annual charity concert",
    "the slow database queries",
    "a contract with the supplier",
    "the school's football pitch",
]
_TAILS = [
    "before the meeting on Monday morning",
    "because nobody had checked it for weeks",
    "while the rain kept falling outside",
    "after a long discussion with the whole team",
    "without telling anyone in the office",
    "just before the deadline expired",
    "in front of a surprisingly large audience",
    "despite several earlier warnings",
    "during the busiest week of the year",
    "with help from two volunteers",
    "and then went home early",
    "as soon as the power came back",
]


def sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` sentences of roughly 12-22 words."""
    rng = random.Random(seed)
    return [
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}."
        for _ in range(count)
    ]


#: The set a quantizer is calibrated on (SmoothQuant scales) at load time.
CALIBRATION_SEED = 7
CALIBRATION_SIZE = 128
#: The set the accuracy guard compares a quantized model with fp32 on, at load time.
CHECK_SEED = 8
CHECK_SIZE = 64
