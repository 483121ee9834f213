"""What a valid experiment definition is, and whom its targeting admits: pure, no Django.

The validators return the cleaned value and a dict of field errors (empty when valid), so the
services can gather every error of a request into one 400 envelope.
"""

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from notifications.experiments.assignment import Arm

METRICS = frozenset(
    {"conversion", "revenue_per_unit", "aov", "add_to_cart_rate", "bounce", "custom_event_count"}
)
DEVICES = frozenset({"desktop", "mobile", "tablet"})
VISITORS = frozenset({"new", "returning"})
TARGETING_KEYS = frozenset({"segment", "score_min", "score_max", "device", "source", "visitor"})
SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")
EVENT_NAME_MAX = 128
SOURCE_MAX = 255
MAX_VARIANTS = 20
MAX_METRICS = 20

Errors = dict[str, list[str]]


@dataclass(frozen=True, slots=True)
class VariantIn:
    key: str
    weight: float
    is_control: bool = False
    name: str = ""


@dataclass(frozen=True, slots=True)
class UnitTraits:
    """What is known of the unit asking for its variants; None where it is not known."""

    device: str | None = None
    source: str | None = None
    visitor: str | None = None
    segment_ids: frozenset[int] | None = None
    score: float | None = None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def metric_validate(value: Any) -> tuple[dict[str, str], list[str]]:
    """{"kind": <one of METRICS>} or {"kind": "custom_event_count", "event": <event name>}."""
    if not isinstance(value, Mapping) or value.get("kind") not in METRICS:
        return {}, [f"unknown metric; one of {sorted(METRICS)}"]
    kind = value["kind"]
    if set(value) - {"kind", "event"}:
        return {}, [f"unknown keys {sorted(set(value) - {'kind', 'event'})}"]
    if kind != "custom_event_count":
        if "event" in value:
            return {}, ["event is only for custom_event_count"]
        return {"kind": kind}, []
    event = value.get("event")
    if not isinstance(event, str) or not event.strip() or len(event) > EVENT_NAME_MAX:
        return {}, [f"custom_event_count needs an event name (1-{EVENT_NAME_MAX} characters)"]
    return {"kind": kind, "event": event.strip()}, []


def metrics_validate(values: Any) -> tuple[list[dict[str, str]], list[str]]:
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) > MAX_METRICS:
        return [], [f"a list of at most {MAX_METRICS} metrics"]
    cleaned: list[dict[str, str]] = []
    errors: list[str] = []
    for index, value in enumerate(values):
        metric, problems = metric_validate(value)
        errors.extend(f"[{index}]: {problem}" for problem in problems)
        cleaned.append(metric)
    return cleaned, errors


def targeting_validate(value: Any) -> tuple[dict[str, Any], Errors]:
    """Check the targeting's shape; the segment's existence in the shop is the service's job."""
    if not isinstance(value, Mapping):
        return {}, {"targeting": ["an object"]}
    errors: Errors = {}
    unknown = set(value) - TARGETING_KEYS
    if unknown:
        errors["targeting"] = [f"unknown keys {sorted(unknown)}; allowed {sorted(TARGETING_KEYS)}"]
    cleaned: dict[str, Any] = {}
    segment = value.get("segment")
    if segment is not None:
        if isinstance(segment, int) and not isinstance(segment, bool) and segment > 0:
            cleaned["segment"] = segment
        else:
            errors["targeting.segment"] = ["a segment id"]
    for bound in ("score_min", "score_max"):
        score = value.get(bound)
        if score is not None:
            if _is_number(score) and 0 <= score <= 1:
                cleaned[bound] = float(score)
            else:
                errors[f"targeting.{bound}"] = ["a number from 0 to 1"]
    if cleaned.get("score_min", 0.0) > cleaned.get("score_max", 1.0):
        errors["targeting.score_max"] = ["must not be below score_min"]
    devices = value.get("device")
    if devices is not None:
        if _is_list_of(devices, lambda d: d in DEVICES):
            cleaned["device"] = sorted(set(devices))
        else:
            errors["targeting.device"] = [f"a non-empty list of {sorted(DEVICES)}"]
    sources = value.get("source")
    if sources is not None:
        if _is_list_of(sources, lambda s: isinstance(s, str) and 0 < len(s.strip()) <= SOURCE_MAX):
            cleaned["source"] = sorted({s.strip().lower() for s in sources})
        else:
            errors["targeting.source"] = [f"a non-empty list of utm_source values (1-{SOURCE_MAX})"]
    visitor = value.get("visitor")
    if visitor is not None:
        if visitor in VISITORS:
            cleaned["visitor"] = visitor
        else:
            errors["targeting.visitor"] = [f"one of {sorted(VISITORS)}"]
    return cleaned, errors


def _is_list_of(value: Any, check: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(check(item) for item in value)


def variants_validate(variants: Sequence[VariantIn]) -> tuple[list[VariantIn], Errors]:
    """At least two variants with distinct slug keys, exactly one control, positive weights.

    Weights are relative shares: any positive finite numbers, normalised here to sum to 1
    (1, 1, 2 → 0.25, 0.25, 0.5), so nobody has to type thirds to 1e-9.
    """
    errors: list[str] = []
    if not 2 <= len(variants) <= MAX_VARIANTS:
        errors.append(f"from 2 to {MAX_VARIANTS} variants")
    keys = [variant.key for variant in variants]
    bad_keys = [key for key in keys if not isinstance(key, str) or not SLUG.match(key)]
    if bad_keys:
        errors.append(f"keys must be slugs of 1-64 letters, digits, '-' or '_': {bad_keys}")
    if len(set(keys)) != len(keys):
        errors.append("variant keys must be distinct")
    controls = sum(1 for variant in variants if variant.is_control)
    if controls != 1:
        errors.append(f"exactly one control variant (got {controls})")
    weights = [variant.weight for variant in variants]
    if not all(_is_number(w) and w > 0 for w in weights):
        errors.append("weights must be positive numbers")
    if errors:
        return [], {"variants": errors}
    total = sum(weights)
    normalised = [
        VariantIn(key=v.key, weight=v.weight / total, is_control=v.is_control, name=v.name)
        for v in variants
    ]
    if not math.isfinite(total) or not all(v.weight > 0 for v in normalised):
        return [], {"variants": ["weights too far apart to normalise"]}
    return normalised, {}


def arms_from(variants: Sequence[Mapping[str, Any]]) -> tuple[Arm, ...]:
    return tuple(Arm(key=v["key"], weight=v["weight"]) for v in variants)


def targeting_admits(targeting: Mapping[str, Any], traits: UnitTraits) -> bool:
    """Whether the unit is in the targeted population; an unknown attribute never matches."""
    if "device" in targeting and traits.device not in targeting["device"]:
        return False
    if "source" in targeting and (traits.source or "").lower() not in targeting["source"]:
        return False
    if "visitor" in targeting and traits.visitor != targeting["visitor"]:
        return False
    if "segment" in targeting and (
        traits.segment_ids is None or targeting["segment"] not in traits.segment_ids
    ):
        return False
    if "score_min" in targeting or "score_max" in targeting:
        if traits.score is None:
            return False
        return targeting.get("score_min", 0.0) <= traits.score <= targeting.get("score_max", 1.0)
    return True


def needs_person_lookup(targeting: Mapping[str, Any]) -> bool:
    """Segment and score band come from the database, not from the request."""
    return bool({"segment", "score_min", "score_max"} & set(targeting))
