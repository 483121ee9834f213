"""Reads of anomalies, alert rules and deliveries for the API, the dashboard and the sweep."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from django.db.models import Count, Q

from analytics.detectors.seasonal import HOUR, series_baseline
from analytics.models import (
    AlertDelivery,
    AlertRule,
    Anomaly,
    AnomalyStatus,
    DeliveryStatus,
    DetectionState,
)
from analytics.periods import hour_floor, local_date
from analytics.selectors.bots import bots_excluded_summary, shared_networks_summary
from analytics.selectors.detection import (
    FREQUENCY_SUFFIX,
    HISTORY,
    SERIES,
    daily_series_get,
    detection_settings_get,
    hourly_series_get,
    orders_reference_get,
    series_config,
    shop_detection_get,
)
from clickserver.errors import ApplicationError
from events.models import PipelineJob, PipelineWatermark, Shop
from events.selectors import active_shop_ids

ACTIVE = (AnomalyStatus.OPEN, AnomalyStatus.ACKNOWLEDGED)
# Buckets either side of an anomaly's window in its chart.
CHART_HOURS = 48
CHART_DAYS = 28


@dataclass(frozen=True, slots=True)
class AnomalyFilters:
    statuses: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None


def anomaly_row(anomaly: Anomaly) -> dict[str, Any]:
    return {
        "id": anomaly.pk,
        "kind": anomaly.kind,
        "metric": anomaly.metric,
        "subject": anomaly.subject,
        "window_start": anomaly.window_start.isoformat(),
        "window_end": anomaly.window_end.isoformat(),
        "observed": anomaly.observed,
        "expected": anomaly.expected,
        "band_low": anomaly.band_low,
        "band_high": anomaly.band_high,
        "score": anomaly.score,
        "direction": anomaly.direction,
        "severity": anomaly.severity,
        "detector": anomaly.detector,
        "explanation": anomaly.explanation,
        "status": anomaly.status,
        "opened_at": anomaly.opened_at.isoformat(),
        "acknowledged_at": anomaly.acknowledged_at.isoformat() if anomaly.acknowledged_at else None,
        "resolved_at": anomaly.resolved_at.isoformat() if anomaly.resolved_at else None,
        "details": anomaly.details,
    }


def anomalies_list(
    *, shop: Shop, filters: AnomalyFilters, limit: int, offset: int = 0
) -> dict[str, Any]:
    """The shop's anomalies, newest window first, with the counts of open ones by severity."""
    rows = Anomaly.objects.filter(shop=shop)
    if filters.statuses:
        rows = rows.filter(status__in=filters.statuses)
    if filters.severities:
        rows = rows.filter(severity__in=filters.severities)
    if filters.kinds:
        rows = rows.filter(kind__in=filters.kinds)
    if filters.metrics:
        rows = rows.filter(metric__in=filters.metrics)
    if filters.since is not None:
        rows = rows.filter(window_start__gte=filters.since)
    if filters.until is not None:
        rows = rows.filter(window_start__lt=filters.until)
    total = rows.count()
    page = rows.order_by("-window_start", "-id")[offset : offset + limit]
    settings = detection_settings_get(shop=shop)
    return {
        "shop": shop.domain,
        "count": total,
        "open": anomalies_open_counts(shop_id=shop.pk),
        # Tagged bots and whether the rollups leave them out: the count of what was excluded.
        "bots": bots_excluded_summary(shop_id=shop.pk, exclude_bots=settings.exclude_bots),
        # Networks shared by many sessions: reported; excluded only when the shop chose so.
        "shared_networks": shared_networks_summary(
            shop_id=shop.pk, exclude=settings.exclude_shared_networks
        ),
        "rows": [anomaly_row(anomaly) for anomaly in page],
    }


def anomalies_open_counts(*, shop_id: int) -> dict[str, int]:
    counts = dict(
        Anomaly.objects.filter(shop_id=shop_id, status=AnomalyStatus.OPEN)
        .values_list("severity")
        .annotate(n=Count("id"))
        .values_list("severity", "n")
    )
    return {severity: counts.get(severity, 0) for severity in ("info", "warning", "critical")}


def anomalies_open_count(*, shop_id: int) -> int:
    """Open anomalies of warning or worse: what the navigation's badge counts."""
    return Anomaly.objects.filter(
        shop_id=shop_id, status=AnomalyStatus.OPEN, severity__in=("warning", "critical")
    ).count()


def anomaly_get_for_shops(*, anomaly_id: int, shops) -> Anomaly:
    """The anomaly if it belongs to one of `shops` (404 otherwise, as for a missing one)."""
    anomaly = Anomaly.objects.filter(pk=anomaly_id, shop__in=shops).first()
    if anomaly is None:
        raise ApplicationError("No such anomaly.", code="not_found", status=404)
    return anomaly


def anomaly_chart(*, anomaly: Anomaly, now: datetime) -> dict[str, Any]:
    """The series around a series anomaly with the band `series_baseline` gives each bucket
    (empty points for anomalies that are not about a series: an order, a bot)."""
    name, _, suffix = anomaly.metric.rpartition("_")
    frequency = {value: key for key, value in FREQUENCY_SUFFIX.items()}.get(suffix)
    if frequency is None or name not in SERIES:
        return {"id": anomaly.pk, "metric": anomaly.metric, "points": []}
    shop = anomaly.shop
    setup = shop_detection_get(shop=shop)
    # Up to the hour in progress: later hours are not zeros, they have not happened.
    end = min(
        hour_floor(now) + timedelta(hours=1),
        hour_floor(anomaly.window_start) + timedelta(hours=CHART_HOURS),
    )
    start = hour_floor(anomaly.window_start) - HISTORY
    hourly = hourly_series_get(shop=shop, start=start, end=end)
    if frequency == HOUR:
        series, config = hourly[name], setup.hourly
        first = pd.Timestamp(anomaly.window_start).tz_convert(setup.tz) - pd.Timedelta(
            hours=CHART_HOURS
        )
    else:
        daily = daily_series_get(
            shop=shop,
            first=local_date(start, setup.tz) + timedelta(days=1),
            last=local_date(end, setup.tz),
            hourly=hourly,
        )
        series, config = daily[name], setup.daily
        first = pd.Timestamp(local_date(anomaly.window_start, setup.tz)) - pd.Timedelta(
            days=CHART_DAYS
        )
    # The chart draws the band the detector used: the same scale floors as detection.
    reference = orders_reference_get(shop_id=shop.pk, now=now)
    usual = float(np.median(reference["value"])) if len(reference) else 1.0
    config = series_config(setup, name=name, frequency=frequency, usual_order=usual)
    frame = series_baseline(series, config=config)
    frame = frame[frame.index >= first]

    def number(value: float) -> float | None:
        return float(value) if np.isfinite(value) else None

    return {
        "id": anomaly.pk,
        "metric": anomaly.metric,
        "frequency": frequency,
        "points": [
            {
                "at": (at.isoformat() if frequency == HOUR else at.date().isoformat()),
                "observed": number(row.observed),
                "expected": number(row.expected),
                "low": number(row.low),
                "high": number(row.high),
            }
            for at, row in zip(frame.index, frame.itertuples(), strict=True)
        ],
    }


def rule_row(rule: AlertRule) -> dict[str, Any]:
    return {
        "id": rule.pk,
        "name": rule.name,
        "is_active": rule.is_active,
        "kinds": rule.kinds,
        "metrics": rule.metrics,
        "min_severity": rule.min_severity,
        "threshold_metric": rule.threshold_metric,
        "threshold_direction": rule.threshold_direction,
        "threshold_value": rule.threshold_value,
        "channel": rule.channel,
        "emails": rule.emails,
        "webhook_url": rule.webhook_url,
        # The signing key is shown to the shop's members: their receiver needs it.
        "secret": rule.secret,
        "cooldown_minutes": rule.cooldown_minutes,
        "created_at": rule.created_at.isoformat(),
    }


def alert_rules_list(*, shop: Shop) -> dict[str, Any]:
    rules = AlertRule.objects.filter(shop=shop).order_by("id")
    return {"shop": shop.domain, "rows": [rule_row(rule) for rule in rules]}


def alert_rule_get_for_shops(*, rule_id: int, shops) -> AlertRule:
    rule = AlertRule.objects.filter(pk=rule_id, shop__in=shops).first()
    if rule is None:
        raise ApplicationError("No such alert rule.", code="not_found", status=404)
    return rule


def alert_deliveries_list(*, shop: Shop, limit: int) -> dict[str, Any]:
    rows = (
        AlertDelivery.objects.filter(shop=shop)
        .select_related("rule", "anomaly")
        .order_by("-created_at", "-id")[:limit]
    )
    return {
        "shop": shop.domain,
        "rows": [
            {
                "id": delivery.pk,
                "rule_id": delivery.rule_id,
                "rule": delivery.rule.name,
                "anomaly_id": delivery.anomaly_id,
                "metric": delivery.metric,
                "channel": delivery.channel,
                "status": delivery.status,
                "attempts": delivery.attempts,
                "response_code": delivery.response_code,
                "error": delivery.error,
                "created_at": delivery.created_at.isoformat(),
                "sent_at": delivery.sent_at.isoformat() if delivery.sent_at else None,
            }
            for delivery in rows
        ],
    }


def shops_detection_due(*, now: datetime) -> list[int]:
    """Active shops whose rollups moved since their last detection, never detected, or not
    detected since the hour began (a drop to nothing moves no rollup)."""
    states = {
        state.shop_id: state
        for state in DetectionState.objects.all().only("shop_id", "rollups_at", "detected_at")
    }
    marks = dict(
        PipelineWatermark.objects.filter(job=PipelineJob.ANALYTICS).values_list(
            "shop_id", "updated_at"
        )
    )
    due = []
    hour = hour_floor(now)
    for shop_id in active_shop_ids():
        state = states.get(shop_id)
        mark = marks.get(shop_id)
        if (
            state is None
            or state.detected_at is None
            or state.detected_at < hour
            or (mark is not None and (state.rollups_at is None or mark > state.rollups_at))
        ):
            due.append(shop_id)
    return due


def alert_deliveries_lost(*, older_than: datetime) -> list[int]:
    """Pending deliveries never tried: their message was lost (the sweep resends them)."""
    return list(
        AlertDelivery.objects.filter(
            Q(status=DeliveryStatus.PENDING) & Q(attempts=0) & Q(created_at__lt=older_than)
        ).values_list("pk", flat=True)[:1000]
    )
