"""The events app's raw SQL, each statement a named function (MariaDB and SQLite).

Raw because these are the hot statements: ingestion's multi-row insert, the pipeline's reads of
event rows and identifiers and its bulk assignment of events to sessions. The shared pieces
(literals, the bulk writer, `is_mysql`) live in clickserver/sql.py.
"""

import functools
import logging
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

import orjson
from django.db import DataError, connection, transaction

from clickserver.chunking import chunks
from clickserver.sql import CHUNK, Literals, aware_utc, db_value, is_mysql, placeholders, select_in
from events.models import Event, PersonIdentifier, Session
from events.validation import EventIn

logger = logging.getLogger(__name__)

_EVENT_COLUMNS = [
    f for f in Event._meta.concrete_fields if f.name not in ("id", "session", "person")
]
_EVENT_NAMES = [f.name for f in _EVENT_COLUMNS]
# Rows per ingestion INSERT: a request's limit (500 events, 512 KB) is one statement, far below
# MariaDB's 16 MiB max_allowed_packet.
INSERT_ROWS = 1000
# Pairs per INSERT into the assignment's temporary table (MariaDB), and per UPDATE … CASE (SQLite).
ASSIGN_ROWS_MYSQL = 5000
ASSIGN_ROWS_SQLITE = 400


def _table(model: Any) -> str:
    return connection.ops.quote_name(model._meta.db_table)


# --- Ingestion: one multi-row insert that skips duplicates ------------------------------------


@functools.cache
def _insert_sql(vendor: str) -> str:
    table = _table(Event)
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in _EVENT_COLUMNS)
    values = placeholders(len(_EVENT_COLUMNS))
    if vendor == "mysql":
        # IGNORE is meant to skip only the unique (shop, event_id) duplicates: every field was
        # validated to fit. It would also skip a row that breaks a CHECK (a JSON document too
        # deep, say) in a multi-row statement, so `_insert_mysql` verifies what it skipped.
        return f"INSERT IGNORE INTO {table} ({columns}) VALUES ({values})"
    return (
        f"INSERT INTO {table} ({columns}) VALUES ({values}) "
        "ON CONFLICT (shop_id, event_id) DO NOTHING"
    )


def events_insert_ignore(*, shop_id: int, events: list[EventIn], received_at: datetime) -> int:
    """Insert validated events, skipping (shop, event_id) duplicates; returns how many were new."""
    if is_mysql():
        return _insert_mysql(shop_id, events, received_at)
    with connection.cursor() as cursor:
        cursor.executemany(_insert_sql(connection.vendor), _rows(shop_id, events, received_at))
        return max(cursor.rowcount, 0)


def _rows(shop_id: int, events: list[EventIn], received_at: datetime) -> list[tuple[Any, ...]]:
    """`_event_columns` as rows for the driver's executemany (SQLite), with datetimes and
    decimals adapted by the backend, each distinct value once (a batch shares its received_at)."""
    ops = connection.ops
    adapters: dict[str, Callable[[Any], Any]] = {
        "received_at": ops.adapt_datetimefield_value,
        "occurred_at": ops.adapt_datetimefield_value,
        "product_price": lambda value: ops.adapt_decimalfield_value(value, 14, 2),
        "revenue": lambda value: ops.adapt_decimalfield_value(value, 14, 2),
    }
    columns = _event_columns(shop_id, events, received_at)
    for index, name in enumerate(_EVENT_NAMES):
        if adapt := adapters.get(name):
            adapted = {value: adapt(value) for value in set(columns[index]) if value is not None}
            columns[index] = [adapted.get(value) for value in columns[index]]
    return list(zip(*columns, strict=True))


def _event_columns(shop_id: int, events: list[EventIn], received_at: datetime) -> list[list[Any]]:
    """The INSERT's values column by column (`_EVENT_NAMES` order), read straight off the events.

    For `Literals.columns`, which converts each column's distinct values once: building a row
    per event first cost as much as the conversion.
    """
    count = len(events)
    columns: list[list[Any]] = []
    for name in _EVENT_NAMES:
        if name == "shop":
            columns.append([shop_id] * count)
        elif name == "received_at":
            columns.append([received_at] * count)
        elif name == "properties":
            columns.append(
                [orjson.dumps(e.properties).decode() if e.properties else "{}" for e in events]
            )
        else:
            columns.append(list(map(attrgetter(name), events)))
    return columns


def _insert_mysql(shop_id: int, events: list[EventIn], received_at: datetime) -> int:
    """INSERT IGNORE with inlined literals (`Literals`: each distinct value escaped once).

    The driver's executemany escapes value by value (about a microsecond each, the largest cost
    of a batch), while a batch repeats most of its values (shop, received_at, empty fields, URL,
    user agent). A request's events (500 at most) are one statement, atomic and durable when it
    returns in autocommit mode; an import's larger chunks are several, committed together.
    """
    prefix = _insert_sql("mysql").split(" VALUES ", 1)[0] + " VALUES "
    literal = Literals()
    statements = list(chunks(events, INSERT_ROWS))
    inserted = 0
    with (
        transaction.atomic() if len(statements) > 1 else nullcontext(),
        connection.cursor() as cursor,
    ):
        for chunk in statements:
            cursor.execute(prefix + literal.columns(_event_columns(shop_id, chunk, received_at)))
            count = max(cursor.rowcount, 0)
            if count < len(chunk):
                _skipped_rows_check(cursor, shop_id=shop_id, events=chunk)
            inserted += count
    return inserted


def _skipped_rows_check(cursor: Any, *, shop_id: int, events: list[EventIn]) -> None:
    """Raise unless every row that INSERT IGNORE skipped was a duplicate (its event_id stored).

    Costs one indexed query, and only for a statement that skipped rows (a client's retry).
    """
    event_ids = sorted({event.event_id for event in events})
    stored: set[str] = set()
    for chunk in chunks(event_ids, CHUNK):
        cursor.execute(
            f"SELECT event_id FROM {_table(Event)} WHERE shop_id = %s "
            f"AND event_id IN ({placeholders(len(chunk))})",
            [shop_id, *chunk],
        )
        stored.update(row[0].rstrip(" ") for row in cursor.fetchall())
    # The column's utf8mb4_bin collation pads: "a " duplicates "a".
    refused = [event_id for event_id in event_ids if event_id.rstrip(" ") not in stored]
    if refused:
        logger.error("shop %s: the database refused events %s", shop_id, refused[:10])
        raise DataError(f"The database refused events {', '.join(refused[:10])}.")


# --- Pipeline reads -----------------------------------------------------------------------------


def events_fetch(
    where: str, params: list[Any], *, columns: tuple[str, ...], limit: int | None = None
) -> list[tuple]:
    """Event rows by raw SQL, converted by hand: the ORM's per-value converters cost more than
    the query on the tens of thousands of rows a batch reads. Converted column by column (a
    transpose is one C call each way), not row by row."""
    quote = connection.ops.quote_name
    # Read as text, `occurred_at` converts in one C call (`fromisoformat`) instead of the
    # driver's Python converter: about half the cost of reading the column.
    mysql = is_mysql()
    names = ", ".join(
        "CAST(occurred_at AS CHAR)" if column == "occurred_at" and mysql else quote(column)
        for column in columns
    )
    with connection.cursor() as cursor:
        suffix = f" LIMIT {int(limit)}" if limit is not None else ""
        cursor.execute(
            f"SELECT {names} FROM {_table(Event)} WHERE {where} ORDER BY id{suffix}", params
        )
        raw = cursor.fetchall()
    if not raw:
        return []
    values = list(zip(*raw, strict=True))
    at = columns.index("occurred_at")
    column = values[at]
    if column and type(column[0]) is str:  # naive UTC text, as stored: parsed in C, no calls
        values[at] = tuple(map(datetime.fromisoformat, map("{}+00:00".format, column)))
    else:
        values[at] = tuple(map(aware_utc, column))
    if "revenue" in columns:
        index = columns.index("revenue")
        values[index] = tuple(
            value if value is None or type(value) is Decimal else Decimal(str(value))
            for value in values[index]
        )
    if "properties" in columns:
        index = columns.index("properties")
        values[index] = tuple(
            orjson.loads(text) if text and text != "{}" else {} for text in values[index]
        )
    return list(zip(*values, strict=True))


def identifiers_persons(*, shop_id: int, kind: str, values: list[str]) -> list[tuple[str, int]]:
    """(value, person_id) of the shop's stored identifiers of this kind among `values`."""
    return select_in(
        f"SELECT value, person_id FROM {_table(PersonIdentifier)} "
        "WHERE shop_id = %s AND kind = %s AND value IN (IN_LIST)",
        values,
        params=[shop_id, kind],
    )


def identifiers_of_persons(
    *, person_ids: list[int], kinds: list[str]
) -> list[tuple[int, str, str]]:
    """(person_id, kind, value) of these persons' identifiers of these kinds."""
    return select_in(
        f"SELECT person_id, kind, value FROM {_table(PersonIdentifier)} "
        f"WHERE kind IN ({placeholders(len(kinds))}) AND person_id IN (IN_LIST)",
        person_ids,
        params=list(kinds),
    )


def sessions_ending_after(
    *, person_ids: list[int], started_at: datetime, ended_at: datetime
) -> list[tuple[int, datetime, datetime]]:
    """(person_id, started_at, ended_at) of these persons' sessions that started at or after
    `started_at` and ended at or after `ended_at`, the instants aware UTC."""
    rows = select_in(
        f"SELECT person_id, started_at, ended_at FROM {_table(Session)} "
        "WHERE started_at >= %s AND ended_at >= %s AND person_id IN (IN_LIST)",
        person_ids,
        params=[db_value(started_at), db_value(ended_at)],
    )
    return [(person_id, aware_utc(start), aware_utc(end)) for person_id, start, end in rows]


# --- Pipeline writes ----------------------------------------------------------------------------


def events_assign(changes: list[tuple[int, int, int]]) -> None:
    """Set (session, person) of many events `(event id, session id, person id)` in a few
    statements, never one per event."""
    if not changes:
        return
    if is_mysql():
        _events_assign_mysql(changes)
    else:
        _events_assign_case(changes)


def _events_assign_mysql(changes: list[tuple[int, int, int]]) -> None:
    """The pairs go to a temporary table in multi-row inserts, then one UPDATE … JOIN on the
    primary key, driven by the temporary table.

    `STRAIGHT_JOIN` pins the join order. Left to itself MariaDB picks it from the table
    statistics, and while the events table looks small next to the temporary table (a shop's
    first backlog, the bench) it scans the whole events table and probes the temporary one for
    each row: 2.5 rows read per row written on a 50,000-event bench run, the whole log once per
    batch in general, and every scanned row is locked for update on the way, so two shops'
    workers could wait on each other's rows. Driven by the temporary table, the statement reads
    and locks exactly the rows it writes.
    """
    with connection.cursor() as cursor:
        # Temporary tables are per connection and neither CREATE nor DROP of one commits.
        cursor.execute(
            "CREATE TEMPORARY TABLE pipeline_assignment "
            "(id BIGINT PRIMARY KEY, session_id BIGINT, person_id BIGINT) ENGINE=MEMORY"
        )
        try:
            # In id order the UPDATE walks the event rows' pages in order (~30 % faster here
            # than in session order): a MEMORY table is scanned in insertion order.
            for chunk in chunks(sorted(changes), ASSIGN_ROWS_MYSQL):
                # Integer literals (they are ids from the database) skip the driver's
                # per-value escaping, which costs more than the insert itself.
                cursor.execute(
                    "INSERT INTO pipeline_assignment VALUES "
                    + ", ".join(f"({int(a)}, {int(b)}, {int(c)})" for a, b, c in chunk)
                )
            cursor.execute(
                f"UPDATE pipeline_assignment a STRAIGHT_JOIN {_table(Event)} e ON e.id = a.id "
                "SET e.session_id = a.session_id, e.person_id = a.person_id"
            )
        finally:
            cursor.execute("DROP TEMPORARY TABLE pipeline_assignment")


def _events_assign_case(changes: list[tuple[int, int, int]]) -> None:
    """An UPDATE … CASE per chunk (SQLite)."""
    with connection.cursor() as cursor:
        for chunk in chunks(changes, ASSIGN_ROWS_SQLITE):
            cases = " ".join(["WHEN %s THEN %s"] * len(chunk))
            params: list[int] = []
            for event_id, session_id, _ in chunk:
                params += [event_id, session_id]
            for event_id, _, person_id in chunk:
                params += [event_id, person_id]
            params += [event_id for event_id, _, _ in chunk]
            cursor.execute(
                f"UPDATE {_table(Event)} SET session_id = CASE id {cases} END, "
                f"person_id = CASE id {cases} END "
                f"WHERE id IN ({placeholders(len(chunk))})",
                params,
            )
