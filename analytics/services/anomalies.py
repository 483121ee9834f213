"""Storing anomalies: one row per (shop, metric, subject, window), updated as detection re-judges
the window, resolved when the metric returns; acknowledged and resolved by a member.

A resolved row is never reopened by the same window: the owner (or the metric's return) closed
it, and re-judging an old window must not page them again.
"""

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from analytics.models import SEVERITY_RANK, Anomaly, AnomalyStatus
from clickserver.errors import ApplicationError
from clickserver.sql import models_update

ACTIVE = (AnomalyStatus.OPEN, AnomalyStatus.ACKNOWLEDGED)
# The figures a re-judged window refreshes.
FIGURES = (
    "window_end",
    "observed",
    "expected",
    "band_low",
    "band_high",
    "score",
    "direction",
    "severity",
    "explanation",
    "details",
)


@dataclass(frozen=True, slots=True)
class AnomalyIn:
    """A finding as storage takes it (the detectors' dataclasses, flattened)."""

    kind: str
    metric: str
    window_start: datetime
    window_end: datetime
    observed: float
    expected: float | None
    band_low: float | None
    band_high: float | None
    score: float | None
    direction: str
    severity: str
    detector: str
    explanation: str
    subject: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoreResult:
    opened: list[int]  # new rows
    # Active rows whose severity rose (rules with a higher minimum) or whose direction flipped.
    escalated: list[int]
    updated: int


def _finite(value: float | None) -> float | None:
    """JSON and the float columns take no inf/NaN: an open band edge is stored as NULL."""
    return value if value is not None and math.isfinite(value) else None


# Rows read, inserted and updated per statement: a detection run over thousands of bots stores
# thousands of findings, which row at a time (a locking read and a write each) took 24 s.
STORE_CHUNK = 500


def anomalies_store(*, shop_id: int, found: list[AnomalyIn], now: datetime) -> StoreResult:
    """Insert new findings, refresh the figures of active ones; resolved rows stay closed.

    In chunks: the existing rows of a chunk are read (and locked) in one statement, the new ones
    inserted in one, the refreshed ones updated in one. A finding repeated in `found` counts
    once, its last figures kept."""
    latest = {(item.metric, item.subject, item.window_start): item for item in found}
    opened, escalated, updated = [], [], 0
    with transaction.atomic():
        keys = list(latest)
        for chunk_start in range(0, len(keys), STORE_CHUNK):
            chunk = keys[chunk_start : chunk_start + STORE_CHUNK]
            rows = {
                (row.metric, row.subject, row.window_start): row
                for row in Anomaly.objects.select_for_update().filter(
                    shop_id=shop_id,
                    metric__in={key[0] for key in chunk},
                    subject__in={key[1] for key in chunk},
                    window_start__in={key[2] for key in chunk},
                )
            }
            new_rows, changed = [], []
            for key in chunk:
                item, row = latest[key], rows.get(key)
                figures = _figures(item)
                if row is None:
                    new_rows.append(
                        Anomaly(
                            shop_id=shop_id,
                            kind=item.kind,
                            metric=item.metric,
                            subject=item.subject,
                            window_start=item.window_start,
                            detector=item.detector,
                            status=AnomalyStatus.OPEN,
                            opened_at=now,
                            updated_at=now,
                            **figures,
                        )
                    )
                    continue
                if row.status == AnomalyStatus.RESOLVED:
                    continue
                # Worse than before, or the other way round (late events turned a drop into a
                # spike): the rules hear of it again.
                if (
                    SEVERITY_RANK[item.severity] > SEVERITY_RANK[row.severity]
                    or item.direction != row.direction
                ):
                    escalated.append(row.pk)
                for name, value in figures.items():
                    setattr(row, name, value)
                row.updated_at = now
                changed.append(row)
            # The database returns the new ids (MariaDB ≥ 10.5 and SQLite: INSERT … RETURNING).
            opened += [row.pk for row in Anomaly.objects.bulk_create(new_rows)]
            models_update(Anomaly, changed, fields=[*FIGURES, "updated_at"])
            updated += len(changed)
    return StoreResult(opened=opened, escalated=escalated, updated=updated)


def _figures(item: AnomalyIn) -> dict[str, Any]:
    return {
        "window_end": item.window_end,
        "observed": float(item.observed),
        "expected": _finite(item.expected),
        "band_low": _finite(item.band_low),
        "band_high": _finite(item.band_high),
        "score": _finite(item.score),
        "direction": item.direction,
        "severity": item.severity,
        "explanation": item.explanation,
        "details": item.details,
    }


def anomalies_resolve_returned(
    *, shop_id: int, metric: str, before: datetime, now: datetime, reason: str
) -> int:
    """Resolve the metric's active anomalies whose window starts before `before`: the metric is
    back inside its band there (or the check no longer fires)."""
    rows = Anomaly.objects.filter(
        shop_id=shop_id, metric=metric, status__in=ACTIVE, window_start__lt=before
    )
    resolved = 0
    for row in rows.select_for_update():
        row.status = AnomalyStatus.RESOLVED
        row.resolved_at = now
        row.updated_at = now
        row.details = {**row.details, "resolution": reason}
        row.save(update_fields=["status", "resolved_at", "updated_at", "details"])
        resolved += 1
    return resolved


def _transition(anomaly: Anomaly, *, to: AnomalyStatus, user: User, now: datetime) -> Anomaly:
    with transaction.atomic():
        row = Anomaly.objects.select_for_update().get(pk=anomaly.pk)
        if row.status == AnomalyStatus.RESOLVED:
            raise ApplicationError("The anomaly is already resolved.", code="conflict", status=409)
        if to == AnomalyStatus.ACKNOWLEDGED and row.status == AnomalyStatus.ACKNOWLEDGED:
            return row  # acknowledging twice changes nothing
        row.status = to
        row.updated_at = now
        if to == AnomalyStatus.ACKNOWLEDGED:
            row.acknowledged_at, row.acknowledged_by = now, user
        else:
            row.resolved_at, row.resolved_by = now, user
            row.details = {**row.details, "resolution": "resolved by a member"}
        row.save()
    return row


def anomaly_acknowledge(*, anomaly: Anomaly, user: User, now: datetime) -> Anomaly:
    """Someone is on it: it stays on the list and alerts for it are not repeated."""
    return _transition(anomaly, to=AnomalyStatus.ACKNOWLEDGED, user=user, now=now)


def anomaly_resolve(*, anomaly: Anomaly, user: User, now: datetime) -> Anomaly:
    return _transition(anomaly, to=AnomalyStatus.RESOLVED, user=user, now=now)
