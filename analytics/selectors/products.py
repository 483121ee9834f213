"""Per-product counts and sales of a period, from the monthly and daily product rollups."""

import heapq
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from analytics.models import PRODUCT_SUMS, ProductDailyRollup, ProductMonthlyRollup
from analytics.selectors.query import Query, ratio
from analytics.selectors.rollups import rollup_totals
from analytics.sql import product_rows_select
from clickserver.money import money_format


@dataclass(frozen=True, slots=True)
class ProductRow:
    product_id: str
    product_name: str
    views: int
    carts: int
    abandoned_carts: int
    purchases: int
    orders: int
    units: int
    revenue: str
    view_to_purchase_rate: float


# The ProductRow field each products ordering sorts by, and the rollup column it sums.
PRODUCT_ORDER_COLUMNS = {
    "views": "view_count",
    "carts": "cart_count",
    "purchases": "purchase_count",
    "revenue": "revenue",
    "abandoned_carts": "abandoned_cart_count",
    "units": "units",
}


def _product_parts(query: Query) -> list[tuple[str, str, date, date]]:
    """(table, day column, low, high) covering the period: whole calendar months from the
    monthly table, the days at either end from the daily one."""
    first, last = query.period.first, query.period.last
    months = []
    month = first if first.day == 1 else (first.replace(day=1) + timedelta(days=32)).replace(day=1)
    while (following := (month + timedelta(days=32)).replace(day=1)) <= last + timedelta(days=1):
        months.append(month)
        month = following
    daily = ProductDailyRollup._meta.db_table
    if not months:
        return [(daily, "day", first, last)]
    parts = [(ProductMonthlyRollup._meta.db_table, "month", months[0], months[-1])]
    for low, high in ((first, months[0] - timedelta(days=1)), (month, last)):
        if low <= high:
            parts.append((daily, "day", low, high))
    return parts


def product_totals(query: Query, *, product_ids: list[str] | None = None) -> dict[str, list[Any]]:
    """Per product of the period (or of `product_ids`): [name, *PRODUCT_SUMS].

    Summing the few thousand part rows here is cheaper than grouping them in SQL (a derived
    table, a temporary table and a sort), and one fetch serves every ranking of the request.
    """
    if product_ids is not None and not product_ids:
        return {}
    rows = product_rows_select(
        shop_id=query.shop.pk,
        parts=_product_parts(query),
        columns=("product_id", "product_name", *PRODUCT_SUMS),
        product_ids=product_ids,
    )
    totals: dict[str, list[Any]] = {}
    for product_id, name, *sums in rows:
        total = totals.get(product_id)
        if total is None:
            totals[product_id] = [name, *sums]
            continue
        total[0] = max(total[0], name)
        for i, value in enumerate(sums, start=1):
            total[i] += value
    return totals


def top_products_by(query: Query, *, order_by: str, limit: int) -> list[ProductRow]:
    """The `limit` products with the highest positive `order_by`: ranked on that one column,
    then read whole for the winners only (the abandoned-cart list and the insights want a few).
    Units and revenue are net of refunds, so a day's row can be negative: the rows are summed
    before the ranking, and a product refunded down to nothing is no winner."""
    column = PRODUCT_ORDER_COLUMNS[order_by]
    sums: dict[str, Any] = defaultdict(int)
    for product_id, value in product_rows_select(
        shop_id=query.shop.pk,
        parts=_product_parts(query),
        columns=("product_id", column),
        nonzero=column,
    ):
        sums[product_id] += value
    positive = [product_id for product_id, value in sums.items() if value > 0]
    winners = heapq.nsmallest(
        limit, positive, key=lambda product_id: (-sums[product_id], product_id)
    )
    return top_products(product_totals(query, product_ids=winners), order_by=order_by, limit=limit)


def top_products(totals: dict[str, list[Any]], *, order_by: str, limit: int) -> list[ProductRow]:
    """The `limit` products with the highest `order_by` (ties: product id), as rows."""
    index = 1 + PRODUCT_SUMS.index(PRODUCT_ORDER_COLUMNS[order_by])
    top = heapq.nsmallest(limit, totals.items(), key=lambda item: (-item[1][index], item[0]))
    return [
        ProductRow(
            product_id=product_id,
            product_name=name or "",
            views=int(views),
            carts=int(carts),
            abandoned_carts=int(abandoned),
            purchases=int(purchases),
            orders=int(orders),
            units=int(units),
            revenue=money_format(Decimal(revenue)),
            view_to_purchase_rate=ratio(purchases, views),
        )
        for product_id, (
            name,
            views,
            carts,
            abandoned,
            purchases,
            orders,
            units,
            revenue,
        ) in top
    ]


@dataclass(frozen=True, slots=True)
class ProductVisitRow:
    product_id: str
    product_name: str
    visits: int


@dataclass(frozen=True, slots=True)
class ProductVisits:
    product_visits: int
    rows: list[ProductVisitRow]
    start: date
    end: date


def product_visits_get(*, query: Query, limit: int) -> ProductVisits:
    total = rollup_totals(query)["product_view_count"]
    rows = [
        ProductVisitRow(product_id=r.product_id, product_name=r.product_name, visits=r.views)
        for r in top_products(product_totals(query), order_by="views", limit=limit)
    ]
    return ProductVisits(
        product_visits=total, rows=rows, start=query.period.first, end=query.period.last
    )


@dataclass(frozen=True, slots=True)
class Products:
    rows: list[ProductRow]
    most_abandoned: ProductRow | None
    start: date
    end: date


def products_get(*, query: Query, order_by: str, limit: int) -> Products:
    totals = product_totals(query)
    abandoned = top_products(totals, order_by="abandoned_carts", limit=1)
    return Products(
        rows=top_products(totals, order_by=order_by, limit=limit),
        most_abandoned=abandoned[0] if abandoned and abandoned[0].abandoned_carts else None,
        start=query.period.first,
        end=query.period.last,
    )
