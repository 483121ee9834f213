"""Every database-specific statement of the analytics app, each a named function.

The rest of the app speaks the ORM; what it cannot say portably (MariaDB and SQLite differ) or
what the ORM makes too slow at rollup volumes is here: epoch microseconds of a datetime column,
the bulk insert of plain rows, and the product rollups' month-and-edge-days union.
"""

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from django.db import connections, models
from django.db.models import BigIntegerField, Func

from clickserver.db_routers import analytics_db
from clickserver.sql import rows_write

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
    The rows go through the one bulk writer, `clickserver.sql.rows_write`, a batch at a time so
    that a generator of rows is never held whole.
    """
    fields = [f for f in model._meta.concrete_fields if not f.primary_key or f.is_relation]
    defaults = [(f.attname, f.get_default()) for f in fields]
    columns = [str(f.column) for f in fields]
    table = model._meta.db_table
    batch: list[tuple] = []
    for row in rows:
        batch.append(tuple(row.get(name, default) for name, default in defaults))
        if len(batch) == INSERT_BATCH:
            rows_write(table, columns, batch)
            batch = []
    if batch:
        rows_write(table, columns, batch)


def product_rows_select(
    *,
    shop_id: int,
    parts: Sequence[tuple[str, str, date, date]],
    columns: Sequence[str],
    product_ids: Sequence[str] | None = None,
    nonzero: str = "",
) -> list[tuple]:
    """`columns` of the product rollup rows in `parts` ((table, day column, low, high) each),
    not summed: only of `product_ids` when given, only where column `nonzero` is not 0 when
    given (units and revenue go below 0 on a day of refunds). Read from the analytics
    database."""
    where = ""
    params: tuple[Any, ...] = ()
    if product_ids is not None:
        where += f" AND product_id IN ({', '.join(['%s'] * len(product_ids))})"
        params = tuple(product_ids)
    if nonzero:
        where += f" AND {nonzero} <> 0"
    sql = " UNION ALL ".join(
        f"SELECT {', '.join(columns)} FROM {table} "
        f"WHERE shop_id = %s AND {column} >= %s AND {column} <= %s{where}"
        for table, column, _, _ in parts
    )
    values = [v for _, _, low, high in parts for v in (shop_id, low, high, *params)]
    with connections[analytics_db()].cursor() as cursor:
        cursor.execute(sql, values)
        return cursor.fetchall()
