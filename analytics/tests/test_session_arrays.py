"""The columnar funnel (numpy over a day's sessions) against the per-unit reference algorithm.

`analytics.funnel_levels.unit_level` is the definition the rest of the suite checks against pandas
and SPEC.md; here random days of sessions (ties in time, repeated types, sessions without any step,
filters and breakdowns) must give the same levels, counts and fastest durations.
"""

import random
from collections import Counter, defaultdict

import pytest

from analytics.funnel_levels import StepSpec, unit_level
from analytics.session_arrays import ATTRIBUTES, funnel_counts, paths_pack, paths_unpack

TYPES = ["page_view", "product_view", "add_to_cart", "checkout_started", "purchase", "signup"]
STEP_LISTS = [
    ["product_view"],
    ["product_view", "add_to_cart", "purchase"],
    ["page_view", "product_view", "add_to_cart", "checkout_started", "purchase"],
    ["add_to_cart", "product_view"],
    ["purchase", "signup", "page_view"],
]


def random_sessions(rng: random.Random, count: int, *, ties: bool, gap_scale: int = 60_000_000):
    sessions = []
    for _ in range(count):
        attributes = (
            rng.choice(["", "google", "mail"]),
            rng.choice(["desktop", "mobile"]),
            rng.choice(["", "US", "DE"]),
        )
        at = rng.randrange(10**15)
        events = []
        for _ in range(rng.randrange(1, 12)):
            events.append((at, rng.choice(TYPES)))
            # With ties, half the gaps are 0: the funnel may take tied events in either order.
            tie = ties and rng.random() < 0.5
            at += 0 if tie else rng.randrange(1, gap_scale)
        sessions.append((attributes, events))
    return sessions


def reference(sessions, steps, *, strict, filters, breakdown):
    """Level counts and fastest durations per breakdown value, one session at a time."""
    specs = [StepSpec(step) for step in steps]
    reached: dict[str, Counter] = defaultdict(Counter)
    durations: dict[str, list[int]] = defaultdict(list)
    for attributes, events in sessions:
        values = dict(zip(ATTRIBUTES, attributes, strict=True))
        if any(values[name] != value for name, value in filters.items()):
            continue
        unit = [
            (at, order, kind, {})
            for order, (at, kind) in enumerate(events)
            if strict or kind in steps
        ]
        level = unit_level(unit, specs, window=None, strict=strict)
        label = values[breakdown] if breakdown else ""
        reached[label][level.level] += 1
        if level.level == len(steps):
            durations[label].append(level.seconds_to_convert)
    return {
        label: ([counts[k] for k in range(1, len(steps) + 1)], sorted(durations[label]))
        for label, counts in reached.items()
        if any(counts[k] for k in range(1, len(steps) + 1))
    }


def columnar(days, steps, *, strict, filters, breakdown):
    result = funnel_counts(
        [paths_unpack(paths_pack(day)) for day in days],
        steps,
        strict=strict,
        filters=filters,
        breakdown=breakdown,
    )
    return {
        label: (counts.reached[1:], sorted(counts.durations)) for label, counts in result.items()
    }


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("ties", [True, False])
def test_columnar_funnel_equals_the_reference_on_random_days(seed, strict, ties):
    rng = random.Random(seed)
    days = [random_sessions(rng, rng.randrange(0, 120), ties=ties) for _ in range(3)]
    every_session = [session for day in days for session in day]
    for steps in STEP_LISTS:
        for filters, breakdown in [
            ({}, ""),
            ({"utm_source": "google"}, ""),
            ({"device": "mobile", "country": "DE"}, ""),
            ({}, "utm_source"),
            ({"device": "desktop"}, "country"),
            ({"utm_source": "never-seen"}, ""),
        ]:
            options = {"strict": strict, "filters": filters, "breakdown": breakdown}
            assert columnar(days, steps, **options) == reference(every_session, steps, **options)


def test_gaps_too_wide_for_32_bits_are_kept_exactly():
    hours = 3600 * 1_000_000
    day = [(("", "desktop", ""), [(0, "product_view"), (2 * hours, "purchase")])]
    blob = paths_pack(day)

    result = funnel_counts(
        [paths_unpack(blob)], ["product_view", "purchase"], strict=False, filters={}
    )

    assert paths_unpack(blob).gaps.dtype.itemsize == 8
    assert result[""].durations == [2 * hours]


def test_repeated_step_types_are_refused():
    with pytest.raises(ValueError, match="distinct"):
        funnel_counts([], ["page_view", "page_view"], strict=False, filters={})


def test_no_days_and_empty_days_give_no_units():
    assert funnel_counts([], ["purchase"], strict=False, filters={}) == {}
    assert (
        funnel_counts([paths_unpack(paths_pack([]))], ["purchase"], strict=True, filters={}) == {}
    )
