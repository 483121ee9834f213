from datetime import UTC, datetime, timedelta

import jsonschema
import pytest

from events.models import Person
from events.tests.factories import EventFactory, PersonFactory
from segments.rules import (
    RULES_SCHEMA,
    EventCondition,
    Group,
    RuleError,
    rules_parse,
    rules_to_q,
)

NOW = datetime(2026, 3, 1, tzinfo=UTC)
CART_NO_PURCHASE_NEWSLETTER = {
    "all": [
        {"event": "add_to_cart", "min_count": 1, "within_days": 7},
        {"event": "purchase", "max_count": 0, "within_days": 7},
        {"property": "utm_source", "equals": "newsletter"},
    ]
}


INVALID_RULES = [
    ([], "rules: must be an object"),
    ({"event": "purchase", "within_days": 7}, "rules: the top level must be a group"),
    ({"all": []}, "rules.all: must be a list of 1 to 50 items"),
    ({"all": [{"event": "purchase"}]}, "rules.all[0]: an event condition needs 'within_days'"),
    (
        {"all": [{"event": "purchase", "within_days": 0}]},
        "rules.all[0].within_days: must be an integer from 1 to 730",
    ),
    (
        {"all": [{"event": "purchase", "within_days": True}]},
        "rules.all[0].within_days: must be an integer from 1 to 730",
    ),
    (
        {"any": [{"event": "purchase", "within_days": 7, "min_count": 3, "max_count": 1}]},
        "rules.any[0]: min_count is greater than max_count",
    ),
    (
        {"all": [{"event": "purchase", "within_days": 7, "color": "red"}]},
        "rules.all[0]: unknown keys: color",
    ),
    (
        {"all": [{"property": "utm_source"}]},
        "rules.all[0]: needs exactly one of 'equals' or 'in'",
    ),
    (
        {"all": [{"property": "bad name", "equals": "x"}]},
        "rules.all[0].property: must be 1-64 characters",
    ),
    ({"all": [{"colour": "red"}]}, "rules.all[0]: must be a group"),
    (
        {"all": [{"any": [{"all": [{"any": [{"all": [{"trait": "a", "equals": 1}]}]}]}]}]},
        "rules.all[0].any[0].all[0].any[0]: groups nest at most 4 deep",
    ),
    ({"all": [], "any": []}, "rules: a group has exactly one key"),
]


@pytest.mark.parametrize(("rules", "message"), INVALID_RULES)
def test_rules_parse_rejects_invalid_rules(rules, message):
    with pytest.raises(RuleError) as error:
        rules_parse(rules)

    assert message in str(error.value)


def _as_json_schema(schema):
    """OpenAPI 3.0's `nullable` as JSON Schema's `type` list, for `jsonschema` to check."""
    if isinstance(schema, list):
        return [_as_json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _as_json_schema(value) for key, value in schema.items() if key != "nullable"}
    if schema.get("nullable"):
        out["type"] = [schema["type"], "null"]
    return out


RULES_VALIDATOR = jsonschema.Draft7Validator(_as_json_schema(RULES_SCHEMA))


@pytest.mark.parametrize(
    ("rules", "message"),
    # The one rule the schema cannot state: a key compared with another.
    [case for case in INVALID_RULES if "min_count is greater" not in case[1]],
)
def test_the_rules_schema_rejects_what_rules_parse_rejects(rules, message):
    assert RULES_VALIDATOR.is_valid(rules) is False


@pytest.mark.parametrize(
    "rules",
    [
        CART_NO_PURCHASE_NEWSLETTER,
        {"any": [{"trait": "plan", "in": ["gold", 1, 2.5, True]}]},
        {"all": [{"property": "country", "equals": "DE", "within_days": None}]},
        {"all": [{"any": [{"all": [{"any": [{"event": "x", "within_days": 730}]}]}]}]},
        {"all": [{"event": "a.b:c-d_e", "min_count": 0, "max_count": 10**6, "within_days": 1}]},
    ],
)
def test_the_rules_schema_admits_what_rules_parse_accepts(rules):
    rules_parse(rules)

    assert RULES_VALIDATOR.is_valid(rules) is True


def test_rules_parse_defaults_an_event_condition_to_at_least_once():
    parsed = rules_parse({"any": [{"event": "purchase", "within_days": 7}]})

    assert parsed == Group(
        op="any",
        items=(EventCondition(event="purchase", min_count=1, max_count=None, within_days=7),),
    )


def _members(shop, rules) -> set[int]:
    q = rules_to_q(rules_parse(rules), shop_id=shop.pk, now=NOW)
    return set(Person.objects.filter(q, shop=shop).values_list("id", flat=True))


def _event(person, event_type, days_ago, **fields):
    return EventFactory(
        shop=person.shop,
        person=person,
        type=event_type,
        occurred_at=NOW - timedelta(days=days_ago),
        **fields,
    )


@pytest.mark.django_db
def test_rules_select_carts_without_purchase_from_the_newsletter(shop):
    carted, bought, stale, other_source = PersonFactory.create_batch(4, shop=shop)
    _event(carted, "add_to_cart", 3, utm_source="newsletter")
    _event(bought, "add_to_cart", 3, utm_source="newsletter")
    _event(bought, "purchase", 2)
    _event(stale, "add_to_cart", 8, utm_source="newsletter")
    _event(other_source, "add_to_cart", 1, utm_source="google")

    members = _members(shop, CART_NO_PURCHASE_NEWSLETTER)

    assert members == {carted.pk}


@pytest.mark.django_db
def test_rules_count_bounds_any_groups_and_traits(shop, other_shop):
    once, thrice, gold = PersonFactory.create_batch(3, shop=shop)
    gold.traits = {"plan": "gold"}
    gold.save()
    _event(once, "product_view", 1, properties={"plan_page": "pricing"})
    for days in (1, 2, 3):
        _event(thrice, "product_view", days)
    stranger = PersonFactory(shop=other_shop)
    _event(stranger, "product_view", 1)

    two_or_more = _members(
        shop, {"all": [{"event": "product_view", "min_count": 2, "within_days": 7}]}
    )
    at_most_one = _members(
        shop, {"all": [{"event": "product_view", "max_count": 1, "within_days": 7}]}
    )
    either = _members(
        shop,
        {
            "any": [
                {"trait": "plan", "in": ["gold"]},
                {"property": "plan_page", "equals": "pricing"},
            ]
        },
    )

    assert two_or_more == {thrice.pk}
    assert at_most_one == {once.pk, gold.pk}
    assert either == {gold.pk, once.pk}


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["pk__in", "a__contains", "person__shop__write_key", "a.b"])
def test_property_names_are_json_keys_never_lookups(shop, name):
    # A name with `__` once became an ORM lookup: `pk__in` a 500, `a__contains` a substring match,
    # `person__shop__write_key` a read through relations. Each must match only its literal key.
    literal, lookalike = PersonFactory.create_batch(2, shop=shop)
    _event(literal, "page_view", 1, properties={name: "x"})
    _event(lookalike, "page_view", 1, properties={"a": "xyz", "pk": "x", "person": "x"})

    members = _members(shop, {"all": [{"property": name, "equals": "x"}]})

    assert members == {literal.pk}


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["plan__gt", "plan__contains", "shop__write_key"])
def test_trait_names_are_json_keys_never_lookups(shop, name):
    literal, lookalike = PersonFactory.create_batch(2, shop=shop)
    literal.traits = {name: "gold"}
    literal.save()
    lookalike.traits = {"plan": "platinum gold", "shop": "gold"}
    lookalike.save()

    members = _members(shop, {"any": [{"trait": name, "in": ["gold", 3, True]}]})

    assert members == {literal.pk}
