"""Every database-specific statement of the analytics app, each a named function.

The rest of the app speaks the ORM; what it cannot say portably (MariaDB and SQLite differ) or
what the ORM makes too slow at rollup volumes is here: epoch microseconds of a datetime column,
the bulk insert of plain rows, and the product rollups' month-and-edge-days union.
"""

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from django.db import connection, connections, models
from django.db.models import BigIntegerField, Func

from clickserver.db_routers import analytics_db

INSERT_BATCH = 2000


class EpochMicroseconds(Func):
    """Microseconds since 1970 of a UTC datetime column, computed by the database."""

    output_field = BigIntegerField()

    def as_mysql(self, compiler, connection, **extra_context):
        return self.as_sql(
            compiler,
            connection,
            template="TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', %(expressions)s)",
            **extra_context,
        )

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(
            compiler,
            connection,
            # Exact: whole seconds from strftime, microseconds from the stored text
            # ('YYYY-MM-DD HH:MM:SS.ffffff', no fraction when it is 0). julianday() is a double
            # of days and drifts by tens of microseconds. '%%%%s' survives both the template's
            # and the SQLite backend's %-formatting as strftime's '%s'.
            template=(
                "(CAST(strftime('%%%%s', %(expressions)s) AS INTEGER) * 1000000"
                " + CAST(substr(%(expressions)s, 21, 6) AS INTEGER))"
            ),
            **extra_context,
        )


def rows_insert(model: type[models.Model], rows: Iterable[Mapping[str, Any]]) -> None:
    """Multi-row INSERTs of plain dicts (field name → value; missing fields take their default).

    `bulk_create` builds a model instance and prepares every value through its field; rollup
    rebuilds write hundreds of thousands of rows, where that costs more than the database does.
    """
    fields = [f for f in model._meta.concrete_fields if not f.primary_key or f.is_relation]
    ops = connection.ops
    adapt = {
        f.attname: ops.adapt_datetimefield_value
        if isinstance(f, models.DateTimeField)
        else ops.adapt_datefield_value
        if isinstance(f, models.DateField)
        else None
        for f in fields
    }
    defaults = {f.attname: f.get_default() for f in fields}
    columns = ", ".join(ops.quote_name(str(f.column)) for f in fields)
    sql = (
        f"INSERT INTO {ops.quote_name(model._meta.db_table)} ({columns}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    batch: list[tuple] = []
    with connection.cursor() as cursor:
        for row in rows:
            values = []
            for name, default in defaults.items():
                value = row.get(name, default)
                adapter = adapt[name]
                if value is not None and adapter is not None:
                    value = adapter(value)
                values.append(value)
            batch.append(tuple(values))
            if len(batch) == INSERT_BATCH:
                cursor.executemany(sql, batch)
                batch = []
        if batch:
            cursor.executemany(sql, batch)


def product_rows_select(
    *,
    shop_id: int,
    parts: Sequence[tuple[str, str, date, date]],
    columns: Sequence[str],
    product_ids: Sequence[str] | None = None,
    positive: str = "",
) -> list[tuple]:
    """`columns` of the product rollup rows in `parts` ((table, day column, low, high) each),
    not summed: only of `product_ids` when given, only where column `positive` is above 0 when
    given. Read from the analytics database."""
    where = ""
    params: tuple[Any, ...] = ()
    if product_ids is not None:
        where += f" AND product_id IN ({', '.join(['%s'] * len(product_ids))})"
        params = tuple(product_ids)
    if positive:
        where += f" AND {positive} > 0"
    sql = " UNION ALL ".join(
        f"SELECT {', '.join(columns)} FROM {table} "
        f"WHERE shop_id = %s AND {column} >= %s AND {column} <= %s{where}"
        for table, column, _, _ in parts
    )
    values = [v for _, _, low, high in parts for v in (shop_id, low, high, *params)]
    with connections[analytics_db()].cursor() as cursor:
        cursor.execute(sql, values)
        return cursor.fetchall()
