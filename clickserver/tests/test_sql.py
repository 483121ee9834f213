"""clickserver/sql.py: the shared bulk writer and literals, on whichever database runs."""

from datetime import UTC, date, datetime

import pytest
from django.db import connection

from clickserver.sql import Literals, models_update, rows_write
from events.models import Person, PersonIdentifier

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
PERSON_COLUMNS = ["shop_id", "user_id", "first_seen_at", "last_seen_at", "traits", "created_at"]


@pytest.mark.django_db
def test_rows_write_returns_new_ids_and_upserts_by_id(shop):
    ids = rows_write(
        Person._meta.db_table,
        PERSON_COLUMNS,
        [(shop.pk, "u-1", T0, T0, {}, T0), (shop.pk, "u-2", T0, T0, {"a": 1}, T0)],
        returning=True,
    )

    rows_write(
        Person._meta.db_table,
        ["id", *PERSON_COLUMNS],
        [(ids[0], shop.pk, "u-1b", T0, T0, {"b": 2}, T0)],
        on_conflict="update",
    )

    assert list(Person.objects.order_by("id").values_list("id", "user_id", "traits")) == [
        (ids[0], "u-1b", {"b": 2}),
        (ids[1], "u-2", {"a": 1}),
    ]


@pytest.mark.django_db
def test_models_update_writes_only_the_named_fields_of_existing_rows(shop):
    first = Person.objects.create(shop=shop, user_id="u-1", first_seen_at=T0, last_seen_at=T0)
    second = Person.objects.create(
        shop=shop, user_id="u-2", first_seen_at=T0, last_seen_at=T0, traits={"k": [1]}
    )
    later = datetime(2026, 2, 1, 8, 30, 15, 250000, tzinfo=UTC)
    first.traits = {"tags": ["a", "b'c"], "n": None}
    first.last_seen_at = later
    first.user_id = "not written"
    second.traits = {}

    models_update(Person, [first, second], fields=["traits", "last_seen_at"])

    assert list(Person.objects.order_by("id").values_list("user_id", "traits", "last_seen_at")) == [
        ("u-1", {"tags": ["a", "b'c"], "n": None}, later),
        ("u-2", {}, T0),
    ]
    assert Person.objects.count() == 2


@pytest.mark.django_db
def test_rows_write_ignore_skips_a_duplicate_unique_key(shop):
    person = Person.objects.create(shop=shop, first_seen_at=T0, last_seen_at=T0)
    columns = ["shop_id", "person_id", "kind", "value", "created_at"]
    row = (shop.pk, person.pk, "user_id", "u-1", T0)

    rows_write(PersonIdentifier._meta.db_table, columns, [row])
    rows_write(PersonIdentifier._meta.db_table, columns, [row, row], on_conflict="ignore")

    assert PersonIdentifier.objects.filter(shop=shop).count() == 1


def test_rows_write_refuses_an_unknown_conflict_mode():
    with pytest.raises(ValueError, match="on_conflict"):
        rows_write("t", ["a"], [(1,)], on_conflict="replace")


@pytest.mark.django_db
def test_literals_write_dates_as_iso_text():
    if connection.vendor != "mysql":
        pytest.skip("literals are inlined on MariaDB only")

    assert Literals().rows([(date(2026, 1, 5), None)]) == "('2026-01-05', NULL)"


@pytest.mark.django_db
def test_rows_write_round_trips_binary_and_float_values():
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE sql_round_trip (data BLOB, share DOUBLE)")
    # Every byte value, and bytes that are not valid UTF-8 (a visitor bitmap is binary).
    blob = bytes(range(256)) + b"\xff\xfe'\\\x00"

    rows_write("sql_round_trip", ["data", "share"], [(blob, 0.125), (bytearray(b"\x00"), 1e-9)])

    with connection.cursor() as cursor:
        cursor.execute("SELECT data, share FROM sql_round_trip ORDER BY share")
        rows = [(bytes(data), share) for data, share in cursor.fetchall()]
    assert rows == [(b"\x00", 1e-9), (blob, 0.125)]
