"""The nightly customer refresh: a shop's orders → one `CustomerPrediction` row per customer.

Orders, not lines: each non-cancelled order of a stitched person counts once at its total, and
its refunded amount is a negative value at the same instant, so revenue is net of refunds while
Gamma-Gamma sees the value of purchases (docs/customers.md). Days are the shop's local days.
The fit and the predictions are the pure `segments.predictions.customers`; this module reads
the orders, writes the rows in bulk (`clickserver.sql.rows_write`), records the shop's fit in
`CustomerModel` and brings the predicted segments up to date. Rerunning with the same `now`
writes the same rows.
"""

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from django.db import transaction

from clickserver.params import local_midnight
from clickserver.sql import rows_write
from events.models import Order, Person, PipelineJob, PipelineWatermark, Shop
from events.traits import age_band
from segments.models import CustomerModel, CustomerPrediction
from segments.predictions.customers import (
    CustomerFit,
    customers_fit,
    customers_model_choose,
    customers_predict,
)
from segments.services.segments import predicted_segments_sync

logger = logging.getLogger(__name__)

COLUMNS = [
    "person_id",
    "shop_id",
    "order_count",
    "revenue",
    "first_order_at",
    "last_order_at",
    "frequency",
    "recency_days",
    "tenure_days",
    "alive_probability",
    "expected_orders_90",
    "expected_orders_365",
    "expected_revenue_90",
    "expected_revenue_365",
    "predicted_clv",
    "purchase_probability_30",
    "next_order_at",
    "churn_risk",
    "churn_band",
    "model",
    "fitted_at",
    "age_band",
]
MONEY_COLUMNS = ("expected_revenue_90", "expected_revenue_365", "predicted_clv")
FLOAT_COLUMNS = (
    "alive_probability",
    "expected_orders_90",
    "expected_orders_365",
    "purchase_probability_30",
    "churn_risk",
)


@dataclass(frozen=True, slots=True)
class CustomerRefreshResult:
    shop_id: int
    customers: int
    model: str
    reason: str
    seconds: float


@dataclass(frozen=True, slots=True)
class _Orders:
    """The model's input (local naive instants) and each customer's order facts (UTC)."""

    frame: pd.DataFrame
    order_count: pd.Series
    first_at: pd.Series
    last_at: pd.Series


def _orders_read(*, shop_id: int, tz: ZoneInfo, now: datetime) -> _Orders:
    rows = list(
        Order.objects.filter(
            shop_id=shop_id, person__isnull=False, is_cancelled=False, placed_at__lt=now
        ).values_list("person_id", "placed_at", "total", "refunded_amount")
    )
    orders = pd.DataFrame(rows, columns=["customer_id", "placed_at", "total", "refunded"])
    orders["placed_at"] = pd.to_datetime(orders["placed_at"], utc=True)
    local = orders["placed_at"].dt.tz_convert(tz).dt.tz_localize(None)
    bought = pd.DataFrame(
        {"customer_id": orders["customer_id"], "ordered_at": local, "value": orders["total"]}
    )
    refunded = orders["refunded"].astype(float) > 0
    refunds = pd.DataFrame(
        {
            "customer_id": orders.loc[refunded, "customer_id"],
            "ordered_at": local[refunded],
            "value": -orders.loc[refunded, "refunded"].astype(float),
        }
    )
    frame = pd.concat([bought.astype({"value": float}), refunds], ignore_index=True)
    grouped = orders.groupby("customer_id")["placed_at"]
    return _Orders(
        frame=frame, order_count=grouped.size(), first_at=grouped.min(), last_at=grouped.max()
    )


def _money(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else round(v, 2) for v in values.tolist()]


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values.tolist()]


def _instants(values: pd.Series) -> list[datetime]:
    return [value.to_pydatetime().astimezone(UTC) for value in values]


def _age_bands(*, shop_id: int, today) -> dict[int, str]:
    """The age band of each of the shop's persons whose traits give one (traits.age_band)."""
    bands = {}
    rows = Person.objects.filter(shop_id=shop_id).exclude(traits={}).values_list("id", "traits")
    for person_id, traits in rows.iterator(chunk_size=5000):
        band = age_band(traits, today=today)
        if band:
            bands[person_id] = band
    return bands


def _rows(
    *,
    shop_id: int,
    orders: _Orders,
    summary: pd.DataFrame,
    fit: CustomerFit,
    now: datetime,
    origin: datetime,
    bands: dict[int, str],
) -> list[tuple]:
    """One tuple per customer in COLUMNS order; NaN becomes NULL."""
    predicted = customers_predict(summary, fit, orders.frame)
    ids = summary.index
    count = len(ids)
    next_days = predicted["next_order_days"].to_numpy(dtype=float)
    columns: dict[str, list] = {
        "person_id": [int(pid) for pid in ids],
        "shop_id": [shop_id] * count,
        "order_count": [int(n) for n in orders.order_count.reindex(ids)],
        "revenue": _money(summary["revenue"].to_numpy(dtype=float)),
        "first_order_at": _instants(orders.first_at.reindex(ids)),
        "last_order_at": _instants(orders.last_at.reindex(ids)),
        "frequency": [int(x) for x in summary["frequency"]],
        "recency_days": summary["recency"].astype(float).tolist(),
        "tenure_days": summary["T"].astype(float).tolist(),
        "next_order_at": [
            None if math.isnan(days) else origin + timedelta(days=days)
            for days in next_days.tolist()
        ],
        "churn_band": predicted["churn_band"].astype(str).tolist(),
        "model": [fit.kind] * count,
        "fitted_at": [now] * count,
        "age_band": [bands.get(int(pid), "") for pid in ids],
    }
    for name in MONEY_COLUMNS:
        columns[name] = _money(predicted[name].to_numpy(dtype=float))
    for name in FLOAT_COLUMNS:
        columns[name] = _floats(predicted[name].to_numpy(dtype=float))
    return list(zip(*(columns[name] for name in COLUMNS), strict=True))


def _rows_store(*, shop_id: int, rows: list[tuple], now: datetime) -> int:
    """Upsert the rows and drop the shop's rows this refresh did not write, in one transaction.

    The pipeline's lock (the one erasures take) keeps persons from being merged away or erased
    while the rows are written; a person gone since the orders were read is left out.
    """
    PipelineWatermark.objects.get_or_create(job=PipelineJob.EVENTS, shop_id=shop_id)
    with transaction.atomic():
        PipelineWatermark.objects.select_for_update().get(job=PipelineJob.EVENTS, shop_id=shop_id)
        existing = set(Person.objects.filter(shop_id=shop_id).values_list("id", flat=True))
        kept = [row for row in rows if row[0] in existing]
        rows_write(
            CustomerPrediction._meta.db_table,
            COLUMNS,
            kept,
            on_conflict="update",
            conflict_columns=("person_id",),
            update_columns=COLUMNS[1:],
        )
        CustomerPrediction.objects.filter(shop_id=shop_id).exclude(fitted_at=now).delete()
    return len(kept)


def customer_predictions_refresh(*, shop_id: int, now: datetime) -> CustomerRefreshResult:
    """Fit the shop's customer model on its orders before `now` and store every prediction."""
    started = time.perf_counter()
    shop = Shop.objects.get(pk=shop_id)
    tz = ZoneInfo(shop.timezone)
    orders = _orders_read(shop_id=shop.pk, tz=tz, now=now)
    cutoff = pd.Timestamp(now).tz_convert(tz).tz_localize(None)
    summary, fit = customers_fit(orders.frame, cutoff=cutoff)
    # The per-shop backtest: the GBM replaces BG/NBD's 90-day figures where it wins.
    fit = customers_model_choose(orders.frame, fit, cutoff=cutoff)
    # Predictions count from the start of the last local day before `now` (summary.py's T).
    last_day = (cutoff - pd.Timedelta(microseconds=1)).floor("D").date()
    rows = _rows(
        shop_id=shop.pk,
        orders=orders,
        summary=summary,
        fit=fit,
        now=now,
        origin=local_midnight(last_day, tz),
        bands=_age_bands(shop_id=shop.pk, today=cutoff.date()),
    )
    written = _rows_store(shop_id=shop.pk, rows=rows, now=now)
    seconds = time.perf_counter() - started
    CustomerModel.objects.update_or_create(
        shop=shop,
        defaults={
            "kind": fit.kind,
            "reason": fit.reason,
            "parameters": fit.parameters,
            "customer_count": fit.customer_count,
            "repeat_customer_count": fit.repeat_customer_count,
            "history_days": fit.history_days,
            "fitted_at": now,
            "seconds": seconds,
            "backtest": fit.backtest,
        },
    )
    predicted_segments_sync(shop_id=shop.pk, now=now)
    result = CustomerRefreshResult(
        shop_id=shop.pk, customers=written, model=fit.kind, reason=fit.reason, seconds=seconds
    )
    logger.info("customer predictions refreshed: %s", result)
    return result
