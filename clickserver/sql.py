"""Database-specific SQL shared by the apps: MariaDB vs SQLite, literals, the bulk writer.

Django's ORM prepares every value through several Python calls; the pipeline and the rollups
write and read hundreds of thousands of values a batch, where that costs more than the database
does. The few raw statements that avoid it share the pieces here. This module imports Django and
the standard library only, never an app.
"""

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

import orjson
from django.db import connection
from django.db.models import JSONField, Model

from clickserver.chunking import chunks

# Rows per IN (...) list or multi-row statement: well under MariaDB's packet and planner limits.
CHUNK = 2000
# Rows per multi-row INSERT of `rows_write`.
WRITE_ROWS = 1000

_tzinfo = attrgetter("tzinfo")


def is_mysql() -> bool:
    """MariaDB (Django's "mysql" vendor); anything else is SQLite here."""
    return connection.vendor == "mysql"


def aware_utc(value: datetime | str) -> datetime:
    """A stored datetime (naive UTC, as a datetime or as text) as an aware UTC datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC)


def db_value(value: Any) -> Any:
    """A Python value as the database driver takes it.

    The ORM's per-field preparation costs more than the rest of the pipeline on a large batch;
    this covers the few types the raw writers write. Datetimes are stored as naive UTC text, as
    Django stores them on both MariaDB and SQLite.
    """
    if isinstance(value, datetime):
        return str(value.astimezone(UTC).replace(tzinfo=None))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return value


def select_in(sql: str, values: list, *, params: list[Any]) -> list[tuple]:
    """Rows of `sql` for every value, an IN list (`IN_LIST` in `sql`) of a chunk at a time.

    Raw SQL because the ORM prepares each value of an IN list through several calls (~10 µs),
    and a batch looks up tens of thousands of identifiers and persons.
    """
    rows: list[tuple] = []
    with connection.cursor() as cursor:
        for chunk in chunks(values, CHUNK):
            cursor.execute(sql.replace("IN_LIST", ", ".join(["%s"] * len(chunk))), params + chunk)
            rows += cursor.fetchall()
    return rows


def placeholders(count: int) -> str:
    """`%s, %s, …` for an IN list of `count` values."""
    return ", ".join(["%s"] * count)


def rows_write(
    table: str,
    columns: Sequence[str],
    rows: list[tuple],
    *,
    on_conflict: str = "error",
    conflict_columns: Sequence[str] = ("id",),
    update_columns: Sequence[str] | None = None,
    returning: bool = False,
) -> list[int]:
    """Multi-row INSERTs of `rows` (tuples in `columns` order) into `table`, in chunks.

    `on_conflict`: "error" (a duplicate raises), "ignore" (INSERT IGNORE / ON CONFLICT DO
    NOTHING: skips a duplicate key), "update" (upsert: ON DUPLICATE KEY UPDATE / ON CONFLICT
    (`conflict_columns`) DO UPDATE of `update_columns`, by default every column but "id").
    With `returning` the new ids come back in row order (MariaDB 10.5+ and SQLite 3.35+
    support INSERT … RETURNING), so new rows need no second query.

    MariaDB gets inlined literals (`Literals`), SQLite the driver's parameters (`db_value`).
    """
    if on_conflict not in ("error", "ignore", "update"):
        raise ValueError(f"on_conflict must be error, ignore or update, not {on_conflict!r}")
    quote = connection.ops.quote_name
    mysql = is_mysql()
    names = ", ".join(quote(column) for column in columns)
    row_sql = "(" + ", ".join(["%s"] * len(columns)) + ")"
    updates = [c for c in columns if c != "id"] if update_columns is None else update_columns
    suffix = ""
    if on_conflict == "update":
        suffix = (
            " ON DUPLICATE KEY UPDATE "
            + ", ".join(f"{quote(c)} = VALUES({quote(c)})" for c in updates)
            if mysql
            else f" ON CONFLICT ({', '.join(quote(c) for c in conflict_columns)}) DO UPDATE SET "
            + ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in updates)
        )
    elif on_conflict == "ignore" and not mysql:
        suffix = " ON CONFLICT DO NOTHING"
    verb = "INSERT IGNORE" if on_conflict == "ignore" and mysql else "INSERT"
    ids: list[int] = []
    literal = Literals() if mysql else None
    with connection.cursor() as cursor:
        for chunk in chunks(rows, WRITE_ROWS):
            sql = f"{verb} INTO {quote(table)} ({names}) VALUES "
            params: list[Any] | None = None
            if literal is not None:
                sql += literal.rows(chunk)
            else:
                params = [db_value(value) for row in chunk for value in row]
                sql += ", ".join([row_sql] * len(chunk))
            cursor.execute(sql + suffix + (" RETURNING id" if returning else ""), params)
            if returning:
                ids.extend(row[0] for row in cursor.fetchall())
    return ids


def named_lock_try(name: str) -> bool:
    """Take a MariaDB named lock (`GET_LOCK`, no wait) for this connection; False when another
    connection holds it. The server releases it when the connection ends, so a worker killed
    mid-run leaves nothing behind (a Redis mark would block until it expired). The name is
    hashed with the database's name: named locks are server-wide. SQLite: always True (one
    process writes at a time anyway)."""
    if not is_mysql():
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT GET_LOCK(%s, 0)", [_lock_name(name)])
        (taken,) = cursor.fetchone()
    return taken == 1


def named_lock_release(name: str) -> None:
    if not is_mysql():
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT RELEASE_LOCK(%s)", [_lock_name(name)])


def _lock_name(name: str) -> str:
    # At most 64 characters.
    digest = hashlib.sha256(f"{connection.settings_dict['NAME']}:{name}".encode()).hexdigest()
    return f"cs:{digest[:48]}"


def models_update(model: type[Model], objects: Sequence[Model], fields: Sequence[str]) -> None:
    """Write `fields` of these existing rows back, a thousand rows per statement.

    Django's `bulk_update` builds a `CASE WHEN id = … THEN …` per field and row, resolved
    through the ORM's expression machinery: 5,000 anomalies took 20 s of Python. This is
    `rows_write`'s upsert on the primary key with every column given (MariaDB checks the
    inserted row's NOT NULL columns even when the key exists), updating only `fields`.
    """
    if not objects:
        return
    concrete = list(model._meta.concrete_fields)
    is_json = [isinstance(field, JSONField) for field in concrete]
    rows = [
        tuple(
            orjson.dumps(value).decode() if json and value is not None else value
            for value, json in zip(
                (getattr(item, field.attname) for field in concrete), is_json, strict=True
            )
        )
        for item in objects
    ]
    column = {field.name: str(field.column) for field in concrete}
    rows_write(
        model._meta.db_table,
        list(column.values()),
        rows,
        on_conflict="update",
        conflict_columns=[column[field.name] for field in concrete if field.primary_key],
        update_columns=[column[name] for name in fields],  # a KeyError names a wrong field
    )


class Literals:
    """MariaDB SQL literals for the values the raw writers write, strings escaped once each.

    The driver escapes every parameter through a few Python calls (~4 µs); a batch writes a few
    hundred thousand values and most strings repeat (URLs, referrers, browsers, countries), so
    inlining them with a per-statement cache of escaped strings costs a fraction of that.
    Escaping is the driver's own (`string_literal`: the connection's charset and SQL mode).
    """

    def __init__(self) -> None:
        connection.ensure_connection()  # raises OperationalError (503) when the database is down
        driver = connection.connection
        self._escape = driver.string_literal
        self._encoding = driver.encoding
        self._strings: dict[str, str] = {}

    def rows(self, rows: list[tuple]) -> str:
        """`(…), (…)` for a VALUES list of these rows (see `columns`)."""
        return self.columns(list(zip(*rows, strict=True)))

    def columns(self, columns: Sequence[Sequence[Any]]) -> str:
        """`(…), (…)` for a VALUES list given column by column, each converted as a whole.

        A column holds one type (or None), and most of its values repeat (a shop id, a country,
        a URL) or are plain integers, so each column's distinct values are converted once and
        the rest is lookups and joins in C; only columns of unhashable values (JSON dicts) go
        value by value. Equal values share one literal, so `Decimal("49.9")` may be written as
        an equal `49.90` of the same column: the same number.
        """
        converted: list[Iterable[str]] = []
        for column in columns:
            kinds = set(map(type, column))
            if kinds == {int}:
                converted.append(map(str, column))
            elif kinds == {datetime} and set(map(_tzinfo, column)) == {UTC}:
                # str() of an aware UTC datetime ends in "+00:00": 1 µs instead of 4, and only
                # once per distinct instant (a batch shares its received_at).
                distinct = {value: f"'{str(value)[:-6]}'" for value in set(column)}
                converted.append(map(distinct.__getitem__, column))
            elif kinds & {dict, list, bytearray, memoryview}:  # unhashable: value by value
                converted.append(map(self, column))
            else:
                distinct = {value: self(value) for value in set(column)}
                converted.append(map(distinct.__getitem__, column))
        return "(" + "), (".join(map(", ".join, zip(*converted, strict=True))) + ")"

    def __call__(self, value: Any) -> str:
        kind = type(value)
        if kind is str:
            text = self._strings.get(value)
            if text is None:
                text = self._strings[value] = self._escape(value.encode(self._encoding)).decode(
                    self._encoding
                )
            return text
        if kind is int:
            return str(value)
        if value is None:
            return "NULL"
        if kind is bool:
            return "1" if value else "0"
        if kind is Decimal:
            return format(value, "f")
        if kind is datetime:
            return f"'{value.astimezone(UTC).replace(tzinfo=None)}'"
        if kind is date:
            return f"'{value.isoformat()}'"
        if kind is dict:
            return self(orjson.dumps(value).decode())
        if kind is float:
            return repr(value)
        if kind in (bytes, bytearray, memoryview):
            # A hex literal: binary data (visitor bitmaps) is not text in the connection charset.
            return f"X'{bytes(value).hex()}'"
        if isinstance(value, str):  # a str subclass, such as a TextChoices member
            return self._escape(value.encode(self._encoding)).decode(self._encoding)
        raise TypeError(f"no SQL literal for {kind.__name__}")
