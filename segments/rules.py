"""The rule grammar of rule-based segments: strict validation and translation to ORM filters.

A rule is a group `{"all": [...]}` or `{"any": [...]}` whose items are groups or conditions:
- event:    `{"event": "add_to_cart", "min_count": 1, "max_count": 3, "within_days": 7}`
- property: `{"property": "utm_source", "equals": "newsletter", "within_days": 30}`
            (`in: [...]` instead of `equals`); matched against the person's events
- trait:    `{"trait": "plan", "equals": "gold"}` (or `in`), matched against Person.traits
Windows are half-open `[now - within_days, now)`.
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q
from django.db.models.fields.json import KeyTransform, KeyTransformIn

from events.models import Event

MAX_DEPTH = 4
MAX_ITEMS = 50
MAX_WINDOW_DAYS = 730
NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Property names that are columns of Event; any other name is looked up in Event.properties.
EVENT_COLUMNS = frozenset(
    {
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_term",
        "utm_content",
        "country",
        "product_id",
        "product_category",
        "product_name",
        "order_id",
        "currency",
        "url",
        "referrer",
        "title",
    }
)
EVENT_KEYS = {"event", "min_count", "max_count", "within_days"}
PROPERTY_KEYS = {"property", "equals", "in", "within_days"}
TRAIT_KEYS = {"trait", "equals", "in"}
Scalar = str | int | float | bool


class RuleError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class EventCondition:
    event: str
    min_count: int | None
    max_count: int | None
    within_days: int


@dataclass(frozen=True, slots=True)
class PropertyCondition:
    property: str
    values: tuple[Scalar, ...]
    within_days: int | None


@dataclass(frozen=True, slots=True)
class TraitCondition:
    trait: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Group:
    op: str  # "all" or "any"
    items: tuple["Group | EventCondition | PropertyCondition | TraitCondition", ...]


Node = Group | EventCondition | PropertyCondition | TraitCondition


def _int(value: Any, path: str, *, low: int, high: int) -> int:
    # bool is an int in Python; `true` is never a meaningful count.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RuleError(path, f"must be an integer from {low} to {high}")
    return value


def _name(value: Any, path: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise RuleError(path, "must be 1-64 characters of letters, digits, _ . : -")
    return value


def _values(raw: dict[str, Any], path: str) -> tuple[Scalar, ...]:
    if ("equals" in raw) == ("in" in raw):
        raise RuleError(path, "needs exactly one of 'equals' or 'in'")
    values = [raw["equals"]] if "equals" in raw else raw["in"]
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_ITEMS:
        raise RuleError(f"{path}.in", f"must be a list of 1 to {MAX_ITEMS} values")
    for value in values:
        if not isinstance(value, str | int | float | bool):
            raise RuleError(path, "values must be strings, numbers or booleans")
    return tuple(values)


def _unknown(raw: dict[str, Any], allowed: set[str], path: str) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise RuleError(path, f"unknown keys: {', '.join(extra)}")


def _parse(raw: Any, path: str, depth: int) -> Node:
    if not isinstance(raw, dict):
        raise RuleError(path, "must be an object")
    if "all" in raw or "any" in raw:
        return _group_parse(raw, path, depth)
    if "event" in raw:
        return _event_parse(raw, path)
    if "property" in raw:
        _unknown(raw, PROPERTY_KEYS, path)
        days = raw.get("within_days")
        return PropertyCondition(
            property=_name(raw["property"], f"{path}.property"),
            values=_values(raw, path),
            within_days=None
            if days is None
            else _int(days, f"{path}.within_days", low=1, high=MAX_WINDOW_DAYS),
        )
    if "trait" in raw:
        _unknown(raw, TRAIT_KEYS, path)
        return TraitCondition(trait=_name(raw["trait"], f"{path}.trait"), values=_values(raw, path))
    raise RuleError(
        path, "must be a group ('all'/'any') or a condition ('event'/'property'/'trait')"
    )


def _group_parse(raw: dict, path: str, depth: int) -> Group:
    if len(raw) != 1:
        raise RuleError(path, "a group has exactly one key, 'all' or 'any'")
    if depth >= MAX_DEPTH:
        raise RuleError(path, f"groups nest at most {MAX_DEPTH} deep")
    op = next(iter(raw))
    items = raw[op]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        raise RuleError(f"{path}.{op}", f"must be a list of 1 to {MAX_ITEMS} items")
    return Group(
        op=op,
        items=tuple(_parse(item, f"{path}.{op}[{i}]", depth + 1) for i, item in enumerate(items)),
    )


def _event_parse(raw: dict, path: str) -> EventCondition:
    _unknown(raw, EVENT_KEYS, path)
    if "within_days" not in raw:
        raise RuleError(path, "an event condition needs 'within_days'")
    low = (
        _int(raw["min_count"], f"{path}.min_count", low=0, high=10**6)
        if "min_count" in raw
        else None
    )
    high = (
        _int(raw["max_count"], f"{path}.max_count", low=0, high=10**6)
        if "max_count" in raw
        else None
    )
    if low is None and high is None:
        low = 1
    if low is not None and high is not None and low > high:
        raise RuleError(path, "min_count is greater than max_count")
    return EventCondition(
        event=_name(raw["event"], f"{path}.event"),
        min_count=low,
        max_count=high,
        within_days=_int(raw["within_days"], f"{path}.within_days", low=1, high=MAX_WINDOW_DAYS),
    )


def rules_parse(raw: Any) -> Group:
    """The validated rule tree; raises RuleError naming the offending path."""
    node = _parse(raw, "rules", 0)
    if not isinstance(node, Group):
        raise RuleError("rules", "the top level must be a group ('all' or 'any')")
    return node


def _rules_schema() -> dict[str, Any]:
    """The grammar above as an OpenAPI 3.0 schema, nesting unrolled to `MAX_DEPTH` (no $ref).

    Everything `rules_parse` checks except `min_count` <= `max_count` (one key against another).
    """
    name = {"type": "string", "pattern": NAME_RE.pattern}
    days = {"type": "integer", "minimum": 1, "maximum": MAX_WINDOW_DAYS}
    scalar = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
    values = {
        "equals": scalar,
        "in": {"type": "array", "items": scalar, "minItems": 1, "maxItems": MAX_ITEMS},
    }
    # `equals` or `in`, not both: `_values`.
    one_value = {"oneOf": [{"required": ["equals"]}, {"required": ["in"]}]}
    count = {"type": "integer", "minimum": 0, "maximum": 10**6}
    conditions = [
        {
            "type": "object",
            "properties": {
                "event": name,
                "min_count": count,
                "max_count": count,
                "within_days": days,
            },
            "required": ["event", "within_days"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"property": name, **values, "within_days": {**days, "nullable": True}},
            "required": ["property"],
            "additionalProperties": False,
            **one_value,
        },
        {
            "type": "object",
            "properties": {"trait": name, **values},
            "required": ["trait"],
            "additionalProperties": False,
            **one_value,
        },
    ]

    def group(depth: int) -> dict[str, Any]:
        item = {"anyOf": [*([group(depth + 1)] if depth + 1 < MAX_DEPTH else []), *conditions]}
        items = {"type": "array", "items": item, "minItems": 1, "maxItems": MAX_ITEMS}
        return {
            "oneOf": [
                {
                    "type": "object",
                    "properties": {op: items},
                    "required": [op],
                    "additionalProperties": False,
                }
                for op in ("all", "any")
            ]
        }

    return {**group(0), "description": "A rule group; see docs/segments.md."}


RULES_SCHEMA = _rules_schema()


def _events_in_window(*, shop_id: int, now: datetime, days: int | None) -> Any:
    events = Event.objects.filter(shop_id=shop_id, person__isnull=False, occurred_at__lt=now)
    if days is not None:
        events = events.filter(occurred_at__gte=now - timedelta(days=days))
    return events


def _counted(events: Any, **having: int) -> Any:
    # person_id IS NOT NULL above matters: `NOT IN` over a set holding NULL matches nothing.
    return events.values("person_id").annotate(n=Count("id")).filter(**having).values("person_id")


def _to_q(node: Node, *, shop_id: int, now: datetime) -> Q:
    if isinstance(node, Group):
        parts = [_to_q(item, shop_id=shop_id, now=now) for item in node.items]
        combined = parts[0]
        for part in parts[1:]:
            combined = combined & part if node.op == "all" else combined | part
        return combined
    if isinstance(node, EventCondition):
        events = _events_in_window(shop_id=shop_id, now=now, days=node.within_days).filter(
            type=node.event
        )
        q = Q()
        if node.min_count:
            q &= Q(pk__in=_counted(events, n__gte=node.min_count))
        if node.max_count is not None:
            q &= ~Q(pk__in=_counted(events, n__gt=node.max_count))
        return q
    if isinstance(node, PropertyCondition):
        events = _events_in_window(shop_id=shop_id, now=now, days=node.within_days)
        if node.property in EVENT_COLUMNS:
            events = events.filter(**{f"{node.property}__in": list(node.values)})
        else:
            events = events.filter(_json_key_in("properties", node.property, node.values))
        return Q(pk__in=events.values("person_id"))
    return Q(_json_key_in("traits", node.trait, node.values))


def _json_key_in(column: str, key: str, values: tuple[Scalar, ...]) -> KeyTransformIn:
    """`column`'s JSON key `key` (taken literally) is one of `values`.

    The key is never spliced into a lookup string such as `properties__<key>__in`: Django splits
    that on `__`, so `pk__in` or `shop__write_key` would become lookups and joins of their own.
    A KeyTransform quotes it as one JSON path member, sent as a query parameter.
    """
    return KeyTransformIn(KeyTransform(key, column), list(values))


def rules_to_q(rules: Group, *, shop_id: int, now: datetime) -> Q:
    """A filter over Person selecting the rule's members at `now`."""
    return _to_q(rules, shop_id=shop_id, now=now)
