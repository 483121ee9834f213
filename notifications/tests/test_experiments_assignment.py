"""Deterministic assignment: the documented worked example, determinism, distribution, holdout."""

import numpy as np
import pytest
from scipy import stats

from notifications.experiments.assignment import (
    Arm,
    bucket,
    bucket_hex,
    is_held_out,
    unit_id_build,
    variant_assign,
    variant_for_bucket,
)

ARMS = (Arm("control", 0.5), Arm("one-click", 0.3), Arm("express", 0.2))


@pytest.mark.parametrize(
    ("unit_id", "holdout_hex", "holdout_bucket", "variant_hex", "variant_bucket", "variant"),
    [
        (
            "anon:visitor-2",
            "c4ba78bd20b3c",
            0.7684703313577321,
            "bc73b2d2b22d5",
            0.7361404194254437,
            "one-click",
        ),
        (
            "anon:visitor-3",
            "9c749d4225371",
            0.6111543928611491,
            "db12fbb6250a1",
            0.8557584113778278,
            "express",
        ),
        (
            "anon:visitor-21",
            "02fe326219776",
            0.01169123549467832,
            "bdfa644cab08c",
            0.7421019255807861,
            None,
        ),
        (
            "user:customer-1042",
            "4c5e542fa9714",
            0.29831434405918333,
            "46c9977831dfe",
            0.2765135448879614,
            "control",
        ),
    ],
)
def test_the_worked_example_of_the_docs(
    unit_id, holdout_hex, holdout_bucket, variant_hex, variant_bucket, variant
):
    holdout_text, variant_text = f"holdout:{unit_id}", f"checkout-button:1:{unit_id}"

    result = variant_assign(
        key="checkout-button", phase=1, unit_id=unit_id, arms=ARMS, holdout_share=0.1
    )

    assert bucket_hex(holdout_text)[:13] == holdout_hex
    assert bucket(holdout_text) == holdout_bucket
    assert bucket_hex(variant_text)[:13] == variant_hex
    assert bucket(variant_text) == variant_bucket
    assert result == variant


def test_bucket_is_the_first_52_bits_of_sha256_over_2_to_the_52():
    text = "checkout-button:1:anon:visitor-2"

    value = bucket(text)

    assert value == int("bc73b2d2b22d5", 16) / 2**52
    assert bucket_hex(text) == "bc73b2d2b22d58c4dc3b91964d7cc6983fec08d85bf7769b47dc32c4083bcf81"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"unit": "person", "anonymous_id": "a1"}, "anon:a1"),
        ({"unit": "person", "anonymous_id": "a1", "user_id": "u1"}, "user:u1"),
        ({"unit": "person", "user_id": "u1"}, "user:u1"),
        ({"unit": "person", "session_id": "s1"}, None),
        ({"unit": "session", "anonymous_id": "a1", "session_id": "s1"}, "session:s1"),
        ({"unit": "session", "anonymous_id": "a1"}, None),
    ],
)
def test_unit_id_rule(kwargs, expected):
    assert unit_id_build(**kwargs) == expected


def test_assignment_is_deterministic_and_changes_with_the_phase():
    ids = [f"anon:{n}" for n in range(1_000)]

    first = [variant_assign(key="k", phase=1, unit_id=u, arms=ARMS, holdout_share=0) for u in ids]
    again = [variant_assign(key="k", phase=1, unit_id=u, arms=ARMS, holdout_share=0) for u in ids]
    phase2 = [variant_assign(key="k", phase=2, unit_id=u, arms=ARMS, holdout_share=0) for u in ids]

    assert first == again
    # A new phase re-randomises: about 1 - Σw² = 62 % of units change arm.
    changed = sum(a != b for a, b in zip(first, phase2, strict=True)) / len(ids)
    assert 0.55 < changed < 0.69


def test_variant_distribution_matches_the_weights_chi_square():
    rng = np.random.default_rng(17)
    ids = [f"anon:{value:016x}" for value in rng.integers(0, 2**63, size=100_000)]

    counts = {arm.key: 0 for arm in ARMS}
    for unit_id in ids:
        counts[variant_for_bucket(bucket(f"checkout-button:1:{unit_id}"), ARMS)] += 1
    observed = [counts[arm.key] for arm in ARMS]
    expected = [arm.weight * len(ids) for arm in ARMS]

    assert stats.chisquare(observed, expected).pvalue > 0.001


def test_holdout_share_is_kept_out_and_shared_across_experiments():
    ids = [f"anon:{n}" for n in range(100_000)]

    held_10 = {u for u in ids if is_held_out(unit_id=u, holdout_share=0.1)}
    in_a = [variant_assign(key="a", phase=1, unit_id=u, arms=ARMS, holdout_share=0.1) for u in ids]
    in_b = [variant_assign(key="b", phase=3, unit_id=u, arms=ARMS, holdout_share=0.1) for u in ids]
    held_5 = {u for u in ids if is_held_out(unit_id=u, holdout_share=0.05)}

    # 3 binomial standard errors of 100,000 draws at p = 0.1 are ±0.0028.
    assert abs(len(held_10) / len(ids) - 0.1) < 0.0028
    assert {u for u, v in zip(ids, in_a, strict=True) if v is None} == held_10
    assert {u for u, v in zip(ids, in_b, strict=True) if v is None} == held_10
    assert held_5 < held_10


def test_variant_shares_among_the_non_held_out_follow_the_weights():
    ids = [f"user:{n}" for n in range(50_000)]

    decisions = [
        variant_assign(key="k", phase=1, unit_id=u, arms=ARMS, holdout_share=0.2) for u in ids
    ]
    counts = [sum(d == arm.key for d in decisions) for arm in ARMS]
    assigned = sum(counts)

    assert stats.chisquare(counts, [arm.weight * assigned for arm in ARMS]).pvalue > 0.001


def test_a_bucket_past_the_rounded_sum_of_weights_falls_in_the_last_arm():
    arms = (Arm("a", 0.1), Arm("b", 0.2), Arm("c", 0.7 - 1e-16))

    assert variant_for_bucket(0.9999999999999999, arms) == "c"
    assert variant_for_bucket(0.0, arms) == "a"
