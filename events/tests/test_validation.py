"""The boundaries of `event_validate`'s fast paths: each must answer exactly as the full checks."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from events.validation import EventInvalid, event_validate

RECEIVED = datetime(2026, 1, 6, tzinfo=UTC)
TAGGED = "https://shop.example/p/1?utm_source=news&utm_medium=&utm_campaign=a+b&utm_source=late"


def validate(**fields):
    return event_validate(
        {"type": "page_view", "anonymous_id": "a", **fields}, received_at=RECEIVED
    )


def utm(event) -> tuple[str, ...]:
    return (
        event.utm_source,
        event.utm_medium,
        event.utm_campaign,
        event.utm_term,
        event.utm_content,
    )


def test_utm_fields_come_from_the_url_when_nothing_else_names_them():
    event = validate(url=TAGGED)

    # The first non-blank value of each key; a blank one counts as absent.
    assert utm(event) == ("news", "", "a b", "", "")


def test_a_repeated_url_reads_the_same_utm_fields():
    first = validate(url=TAGGED)

    second = validate(url=TAGGED)

    assert utm(second) == utm(first) == ("news", "", "a b", "", "")


def test_a_url_without_utm_fields_leaves_them_empty():
    event = validate(url="https://shop.example/p/1?ref=utm")

    assert utm(event) == ("", "", "", "", "")


def test_utm_object_then_top_level_fields_override_the_url():
    event = validate(url=TAGGED, utm={"source": "ads"}, utm_medium="cpc", utm_source="ignored")

    assert utm(event) == ("ads", "cpc", "a b", "", "")


def test_a_blank_utm_object_still_falls_back_to_the_url():
    event = validate(url=TAGGED, utm={})

    assert utm(event) == ("news", "", "a b", "", "")


def test_a_utm_value_is_cut_to_255_characters_from_the_url_only():
    long = "x" * 300

    from_url = validate(url=f"https://shop.example/?utm_term={long}")

    assert from_url.utm_term == "x" * 255
    with pytest.raises(EventInvalid) as error:
        validate(utm_term=long)
    assert (error.value.code, error.value.detail) == (
        "too_long",
        "utm_term is longer than 255 characters.",
    )


@pytest.mark.parametrize(
    ("fields", "code", "detail"),
    [
        ({"utm": "news"}, "invalid_type", "utm must be an object."),
        ({"utm": {"source": ["a"]}}, "invalid_type", "utm.source must be a string."),
        ({"utm_campaign": True}, "invalid_type", "utm_campaign must be a string."),
        ({"title": {}}, "invalid_type", "title must be a string."),
        ({"title": False}, "invalid_type", "title must be a string."),
        ({"title": "t" * 513}, "too_long", "title is longer than 512 characters."),
        ({"event_id": 10**64}, "too_long", "event_id is longer than 64 characters."),
        ({"product": {"price": "1e12"}}, "invalid_number", "product.price is out of range."),
        ({"product": {"price": "NaN"}}, "invalid_number", "product.price is out of range."),
    ],
)
def test_rejections_keep_their_code_and_detail(fields, code, detail):
    with pytest.raises(EventInvalid) as error:
        validate(**fields)

    assert (error.value.code, error.value.detail) == (code, detail)


def test_numbers_are_read_as_text_and_amounts_rounded_to_cents():
    event = validate(
        event_id=64,
        title=1.5,
        product={"id": 7, "price": "999999999999.994"},
        order={"revenue": 12.345},
    )

    assert (event.event_id, event.title, event.product_id) == ("64", "1.5", "7")
    assert event.product_price == Decimal("999999999999.99")
    assert event.revenue == Decimal("12.34")


def test_properties_up_to_the_limit_are_kept():
    empty = validate(properties={})
    full = validate(properties={"x": "y" * (32 * 1024 - 8)})

    assert empty.properties == {}
    assert len(full.properties["x"]) == 32 * 1024 - 8
    with pytest.raises(EventInvalid) as error:
        validate(properties={"x": "y" * (32 * 1024 - 7)})
    assert error.value.code == "properties_too_large"


def refund(**fields):
    return event_validate(
        {"type": "refund", "anonymous_id": "a", "order": {"id": "o1"}, **fields},
        received_at=RECEIVED,
    )


def test_a_refunds_products_are_cleaned_into_its_properties():
    event = refund(
        products=[
            {"id": 7, "name": "Mug", "quantity": "2", "price": "4.5"},
            {"sku": "T-1", "amount": 3},
        ],
        properties={"reason": "damaged"},
    )

    assert event.properties == {
        "reason": "damaged",
        "products": [
            {"id": "7", "sku": "", "name": "Mug", "quantity": 2, "amount": "9.00"},
            {"id": "", "sku": "T-1", "name": "", "quantity": 1, "amount": "3.00"},
        ],
    }
    # Segment's place for them, in the properties, is read the same way.
    segment = refund(properties={"products": [{"product_id": "p9", "price": 2}]})
    assert segment.properties["products"] == [
        {"id": "p9", "sku": "", "name": "", "quantity": 1, "amount": "2.00"}
    ]
    # Another event type's `products` is left as it came.
    cart = validate(type="cart_view", properties={"products": [{"id": 1}]})
    assert cart.properties == {"products": [{"id": 1}]}


@pytest.mark.parametrize(
    ("products", "code", "detail"),
    [
        ({"id": "x"}, "invalid_type", "products must be a list"),
        (["x"], "invalid_type", "products[0] must be an object"),
        ([{"quantity": 1}], "missing_field", "products[0] needs an id, a sku or a name"),
        ([{"id": "x", "quantity": 0}], "invalid_number", "products[0].quantity must be at least"),
        ([{"id": "x", "quantity": 2_000_000}], "invalid_number", "up to one million"),
        ([{"id": "x", "quantity": 1.5}], "invalid_number", "products[0].quantity"),
        ([{"id": "x", "amount": -1}], "invalid_number", "refunds a negative amount"),
        ([{"id": "x", "price": "lots"}], "invalid_number", "products[0].price"),
        ([{"id": "x", "amount": True}], "invalid_number", "products[0].amount"),
        ([{"id": "x" * 129}], "too_long", "products[0].id"),
        ([{"id": ["x"]}], "invalid_type", "products[0].id must be a string"),
        ([{"id": "x"}] * 101, "too_long", "more than 100 refund lines"),
    ],
)
def test_a_refunds_bad_products_reject_the_event(products, code, detail):
    with pytest.raises(EventInvalid) as error:
        refund(products=products)

    assert error.value.code == code
    assert detail in error.value.detail
