"""Deterministic assignment of units to variants: pure, no Django, no lookups.

The same function runs in every web worker, in Celery and (ported line for line) in the
storefront snippet, so it must stay exactly reproducible in JavaScript: SHA-256 of a UTF-8 string,
the first 13 hex digits (52 bits, exact in a JS Number) divided by 2**52. docs/experiments.md,
"Assignment", has the algorithm and a worked example that `test_experiments_assignment.py` checks.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

BUCKET_HEX_DIGITS = 13
BUCKET_SCALE = float(2 ** (4 * BUCKET_HEX_DIGITS))
# Salt of the holdout hash. An assignment hash is "<key>:<phase>:<unit>" with an integer phase, so
# "holdout:<unit>" never equals one, and the same unit is held out of every experiment of the shop
# whose holdout share is above its holdout bucket.
HOLDOUT_SALT = "holdout"


@dataclass(frozen=True, slots=True)
class Arm:
    key: str
    weight: float


def unit_id_build(
    *, unit: str, anonymous_id: str = "", user_id: str = "", session_id: str = ""
) -> str | None:
    """The string a unit is hashed as; None when the ids given do not name one.

    person: "user:<user_id>" once the shopper is identified, else "anon:<anonymous_id>" (the
    prefixes keep a user id from colliding with an anonymous id of the same text);
    session: "session:<session_id>", the storefront's own session key.
    """
    if unit == "session":
        return f"session:{session_id}" if session_id else None
    if user_id:
        return f"user:{user_id}"
    return f"anon:{anonymous_id}" if anonymous_id else None


def bucket_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def bucket(text: str) -> float:
    """A uniform float in [0, 1) from the first 52 bits of SHA-256(text)."""
    return int(bucket_hex(text)[:BUCKET_HEX_DIGITS], 16) / BUCKET_SCALE


def is_held_out(*, unit_id: str, holdout_share: float) -> bool:
    return holdout_share > 0 and bucket(f"{HOLDOUT_SALT}:{unit_id}") < holdout_share


def variant_for_bucket(value: float, arms: Sequence[Arm]) -> str:
    """The arm whose slice of [0, 1) holds `value`, slices laid out in order by cumulative weight.

    The last arm also takes a value at or above the float sum of the weights (a sum that rounds
    to just under 1), so every bucket lands somewhere.
    """
    cumulative = 0.0
    for arm in arms:
        cumulative += arm.weight
        if value < cumulative:
            return arm.key
    return arms[-1].key


def variant_assign(
    *, key: str, phase: int, unit_id: str, arms: Sequence[Arm], holdout_share: float
) -> str | None:
    """The variant of `unit_id` in phase `phase` of experiment `key`; None when held out."""
    if is_held_out(unit_id=unit_id, holdout_share=holdout_share):
        return None
    return variant_for_bucket(bucket(f"{key}:{phase}:{unit_id}"), arms)
