from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from notifications.dataset import (
    CONTEXT_FEATURES,
    EVENT_TYPE_INDEX,
    MAX_LEN,
    category_bucket,
    prefixes_expand,
    sequences_build,
    sequences_prefix,
    split_by_time,
    taobao_sessionize,
)

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
PV, CART = EVENT_TYPE_INDEX["product_view"], EVENT_TYPE_INDEX["add_to_cart"]


def frame(rows):
    return pd.DataFrame(rows, columns=["session_key", "occurred_at", "type", "price", "category"])


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_sequences_stop_before_the_first_purchase_and_label_the_session():
    events = frame(
        [
            ("a", at(0), "product_view", 9.0, "shoes"),
            ("a", at(1), "add_to_cart", 9.0, "shoes"),
            ("a", at(2), "purchase", 9.0, "shoes"),
            ("a", at(3), "product_view", None, None),
            ("b", at(0), "page_view", None, None),
            ("b", at(10), "teleport", None, ""),
            ("c", at(0), "purchase", 5.0, "hats"),
        ]
    )

    batch = sequences_build(events)

    assert list(batch.session_keys) == ["a", "b"]
    assert list(batch.labels) == [1, 0]
    assert batch.event_type[0, :3].tolist() == [PV, CART, 0]
    assert batch.event_type[1, :3].tolist() == [EVENT_TYPE_INDEX["page_view"], 1, 0]
    assert batch.category[0, :2].tolist() == [category_bucket("shoes")] * 2
    assert batch.category[1, :2].tolist() == [0, 0]
    np.testing.assert_allclose(batch.numeric[0, :2, 0], [0.0, np.log1p(60)], rtol=1e-6)
    np.testing.assert_allclose(batch.numeric[0, :2, 1], [0.0, np.log1p(1)], rtol=1e-6)
    np.testing.assert_allclose(batch.numeric[0, :2, 2], [np.log1p(9.0)] * 2, rtol=1e-6)
    np.testing.assert_allclose(batch.numeric[1, 1, 0], np.log1p(600), rtol=1e-6)
    assert batch.ended_at[0] == np.datetime64("2026-01-05T12:03:00")


def test_long_sessions_keep_their_latest_steps_with_true_positions():
    events = frame([("a", at(i), "product_view", None, None) for i in range(MAX_LEN + 5)])

    batch = sequences_build(events)

    assert (batch.event_type[0] == PV).all()
    np.testing.assert_allclose(batch.numeric[0, 0, 1], np.log1p(5), rtol=1e-6)


def test_prefix_hides_later_steps():
    events = frame([("a", at(i), "product_view", 1.0, "x") for i in range(6)])

    prefix = sequences_prefix(sequences_build(events), events=3)

    assert prefix.event_type[0, :4].tolist() == [PV, PV, PV, 0]
    assert prefix.numeric[0, 3:].sum() == 0.0


def test_prefixes_are_every_events_seen_so_far_with_the_sessions_label():
    events = frame(
        [
            ("a", at(0), "product_view", 9.0, "shoes"),
            ("a", at(1), "add_to_cart", 9.0, "shoes"),
            ("a", at(2), "purchase", 9.0, "shoes"),
            ("b", at(0), "page_view", None, None),
        ]
    )

    prefixes = prefixes_expand(sequences_build(events))

    assert list(prefixes.session_keys) == ["a", "a", "b"]
    assert prefixes.event_type[:, :3].tolist() == [[PV, 0, 0], [PV, CART, 0], [2, 0, 0]]
    assert list(prefixes.labels) == [1, 1, 0]
    assert prefixes.weights.tolist() == [1.0, 1.0, 1.0]
    assert prefixes.numeric[0, 1:].sum() == 0.0


def test_a_long_session_keeps_spaced_prefixes_weighted_to_its_length():
    events = frame([("a", at(i), "product_view", None, None) for i in range(30)])

    prefixes = prefixes_expand(sequences_build(events), max_per_session=4)

    assert (prefixes.event_type > 0).sum(axis=1).tolist() == [1, 11, 20, 30]
    assert prefixes.weights.tolist() == [7.5] * 4


def test_time_split_is_ordered_and_drops_sessions_that_straddle_a_cutoff():
    rows = []
    for day in range(20):
        rows.append((f"s{day:02d}", at(day * 60 * 24), "product_view", None, None))
        rows.append((f"s{day:02d}", at(day * 60 * 24 + 5), "add_to_cart", None, None))
    # Starts on day 10 (train) but only ends, with its purchase, on day 15, after the cut-off.
    rows.append(("late", at(10 * 60 * 24 + 1), "product_view", None, None))
    rows.append(("late", at(15 * 60 * 24 + 1), "purchase", None, None))
    batch = sequences_build(frame(rows))

    split = split_by_time(batch)

    assert split.validation_starts_at == pd.Timestamp("2026-01-18 12:00")
    assert split.test_starts_at == pd.Timestamp("2026-01-21 12:00")
    assert list(split.train.session_keys) == [f"s{d:02d}" for d in range(13)]
    assert list(split.validation.session_keys) == ["s13", "s14", "s15"]
    assert list(split.test.session_keys) == ["s16", "s17", "s18", "s19"]
    assert split.train.ended_at.max() < np.datetime64(split.validation_starts_at)
    assert split.validation.ended_at.max() < np.datetime64(split.test_starts_at)


def test_split_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no sessions"):
        split_by_time(sequences_build(frame([])))


def test_taobao_sessions_break_after_30_minutes_idle_or_24_hours():
    start = 1_511_544_000
    stamps = [0, 1800, 3601, *[3601 + 1700 * i for i in range(1, 52)]]
    raw = pd.DataFrame(
        {
            "user_id": ["1"] * len(stamps) + ["2"],
            "item_id": "9",
            "category_id": "7",
            "behavior_type": ["pv"] * len(stamps) + ["buy"],
            "timestamp": [start + s for s in stamps] + [start],
        }
    )

    events = taobao_sessionize(raw)

    keys = events.groupby("session_key").size().to_dict()
    # 0 and 1800 s (exactly 30 min: same session); 3601 s is 1801 s later: a new one, which
    # then runs 1700 s steps until it has lasted 24 h (86,400 s ≥ 50 steps of 1700 s = 85,000).
    assert keys == {"1:0": 2, "1:1": 51, "1:2": 1, "2:0": 1}
    assert events.loc[events["session_key"] == "2:0", "type"].tolist() == ["purchase"]


def person_frame(rows):
    return pd.DataFrame(
        rows, columns=["session_key", "occurred_at", "type", "price", "category", "person_key"]
    )


def test_context_counts_only_the_persons_events_before_the_session_starts():
    events = person_frame(
        [
            ("p1", at(0), "product_view", None, None, "u"),
            ("p1", at(1), "add_to_cart", None, None, "u"),
            ("p1", at(2), "purchase", None, None, "u"),
            ("p2", at(60 * 24), "product_view", None, None, "u"),
            ("p2", at(60 * 24 + 1), "add_to_cart", None, None, "u"),
            # Another person, and a third session of u at the very second p2 starts.
            ("q1", at(30), "purchase", None, None, "v"),
            ("q2", at(31), "product_view", None, None, "v"),
        ]
    )

    batch = sequences_build(events)
    context = dict(zip(batch.session_keys, batch.context, strict=True))

    assert list(CONTEXT_FEATURES) == [
        "log_previous_sessions",
        "log_previous_events",
        "log_previous_add_to_carts",
        "log_previous_purchases",
        "log_days_since_last_event",
        "has_history",
    ]
    assert context["p1"].tolist() == [0.0] * len(CONTEXT_FEATURES)
    np.testing.assert_allclose(
        context["p2"],
        [*np.log1p([1, 3, 1, 1, (24 * 60 - 2) / (24 * 60)]), 1.0],
        rtol=1e-5,
    )
    # v's purchase is in its own first session (dropped: it starts with a purchase) yet counts.
    np.testing.assert_allclose(context["q2"][[0, 1, 3, 5]], [*np.log1p([1, 1, 1]), 1.0])
    # The session's own events, its label, and anything later never reach its context.
    assert context["p1"][3] == 0.0


def test_context_ignores_events_at_the_sessions_start_and_reads_a_separate_history():
    live = person_frame([("s9", at(100), "product_view", None, None, 7)])
    history = person_frame(
        [
            ("s1", at(0), "add_to_cart", None, None, 7),
            ("s1", at(5), "purchase", None, None, 7),
            ("s8", at(100), "product_view", None, None, 7),  # same instant: not "before"
            ("s9", at(100), "product_view", None, None, 7),
            ("s9", at(101), "purchase", None, None, 7),  # the future of the live session
            ("x1", at(50), "purchase", None, None, 8),  # someone else
        ]
    )

    batch = sequences_build(live, history=history)

    np.testing.assert_allclose(
        batch.context[0],
        [*np.log1p([1, 2, 1, 1, 95 / (24 * 60)]), 1.0],
        rtol=1e-5,
    )


def test_without_persons_every_session_has_an_empty_history():
    events = frame([("a", at(0), "product_view", None, None), ("b", at(9), "search", None, None)])

    batch = sequences_build(events)

    assert batch.context.shape == (2, len(CONTEXT_FEATURES))
    assert not batch.context.any()


def test_prefix_keeps_the_context():
    events = person_frame(
        [("a", at(0), "purchase", None, None, "u")]
        + [("b", at(60 + i), "product_view", None, None, "u") for i in range(6)]
    )

    batch = sequences_build(events)

    np.testing.assert_array_equal(sequences_prefix(batch, events=3).context, batch.context)
