"""Every read of the notifications app that an interface needs."""

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from django.db import connection
from django.db.models import Case, Exists, F, FloatField, OuterRef, Q, QuerySet, Value, When
from django.db.models.functions import Cast

from analytics.selectors.bots import bot_people_excluded
from analytics.sql import EpochMicroseconds
from events.models import Event, Session, Shop
from notifications.calibration import BINS, CalibrationReport, calibration_report
from notifications.dataset import FRAME_COLUMNS
from notifications.models import (
    CampaignDecision,
    ConversionScore,
    ExperimentExposure,
    ModelVersion,
    ScoreSample,
)

LIVE_WINDOW = timedelta(minutes=30)
# A customer profile lists at most this many experiment exposures (and as many notification
# decisions), newest first.
PROFILE_EXPOSURES_MAX = 50


def events_frame(
    *,
    shop: Shop,
    session_ids: list[int] | None = None,
    person_ids: list[int] | None = None,
    until: datetime | None = None,
    without_session_ids: list[int] | None = None,
) -> pd.DataFrame:
    """The shop's sessionised events as the frame `notifications.dataset` reads.

    Events the pipeline has not assigned to a session yet are left out. `until` bounds the log
    (half-open) so a training run sees nothing after its cut-off. `person_key` is the session's
    person (the person the context features describe); `person_ids` selects the events of those
    persons' sessions (the history live scoring reads the context from).
    """
    events = Event.objects.filter(shop=shop, session_id__isnull=False)
    if session_ids is not None:
        events = events.filter(session_id__in=session_ids)
    if person_ids is not None:
        events = events.filter(session__person_id__in=person_ids)
    if without_session_ids:
        events = events.exclude(session_id__in=without_session_ids)
    if until is not None:
        events = events.filter(occurred_at__lt=until)
    # Times as epoch microseconds and prices as floats from the database: converting a
    # datetime and a Decimal per row in Python was half of a live-score run's read.
    rows = (
        events.order_by("session_id", "occurred_at", "id")
        .annotate(at_us=EpochMicroseconds("occurred_at"), price=Cast("product_price", FloatField()))
        .values_list(
            "session_id",
            "at_us",
            "type",
            "price",
            "product_category",
            "session__person_id",
        )
    )
    # The ORM builds the query; the driver's rows are read as they come (every column is
    # already an int, float or str): the ORM's per-row converters cost a second per 150,000.
    sql, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        records = cursor.fetchall()
    frame = pd.DataFrame.from_records(list(records), columns=FRAME_COLUMNS)
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at"].astype("int64"), unit="us", utc=True)
    frame["price"] = pd.to_numeric(frame["price"], errors="coerce")
    return frame


def sessions_live(*, shop: Shop, now: datetime) -> QuerySet[Session]:
    """Sessions with an event in the last 30 minutes (the sessions a notification can reach)."""
    return Session.objects.filter(shop=shop, ended_at__gte=now - LIVE_WINDOW, ended_at__lte=now)


def sessions_to_score(
    *, shop: Shop, now: datetime, model_version: ModelVersion
) -> list[tuple[int, int, int]]:
    """(session, person, event count) of the live sessions without a purchase whose score is
    missing, was given before their latest events, or comes from another model version.

    Not the people the analytics leave out as bots (analytics/selectors/bots.py, the shop's
    choice): no campaign acts on them, and a bot farm's thousands of sessions, each growing by
    an event every few seconds, would be rescored on every run."""
    current = ConversionScore.objects.filter(
        session=OuterRef("pk"), model_version=model_version, event_count=OuterRef("event_count")
    )
    stale = (
        sessions_live(shop=shop, now=now)
        .filter(is_converted=False)
        .filter(~Exists(current))
        .values_list("id", "person_id", "event_count")
    )
    excluded = bot_people_excluded(shop_id=shop.pk)
    return [row for row in stale if row[1] not in excluded]


def model_version_active(*, shop: Shop, name: str = "conversion") -> ModelVersion | None:
    return ModelVersion.objects.filter(shop=shop, name=name, is_active=True).first()


def model_version_next_number(*, name: str = "conversion") -> int:
    latest = ModelVersion.objects.filter(name=name).order_by("-version").first()
    return latest.version + 1 if latest else 1


def conversion_scores_list(
    *, shop: Shop, session_id: int | None = None
) -> QuerySet[ConversionScore]:
    scores = ConversionScore.objects.filter(shop=shop).select_related("model_version")
    if session_id is not None:
        scores = scores.filter(session_id=session_id)
    return scores.order_by("-scored_at", "-id")


def conversion_scores_live(*, shop: Shop, now: datetime) -> QuerySet[Session]:
    """Live sessions for the Live page: prospects by score, best first, then those that bought.

    A session that holds a purchase is not a prospect: it is listed as bought (`live_score` is
    None) after the prospects, most recent first. A prospect without a score yet is left out.
    Each row has `live_score`, `live_status` ("prospect" or "bought") and `conversion_score`.
    """
    return (
        Session.objects.filter(shop=shop, ended_at__gte=now - LIVE_WINDOW, ended_at__lte=now)
        .filter(Q(is_converted=True) | Q(conversion_score__isnull=False))
        .select_related("conversion_score__model_version")
        .annotate(
            live_status=Case(
                When(is_converted=True, then=Value("bought")), default=Value("prospect")
            ),
            live_score=Case(
                When(is_converted=True, then=Value(None, output_field=FloatField())),
                default=F("conversion_score__score"),
            ),
        )
        .order_by("is_converted", F("live_score").desc(nulls_last=True), "-ended_at", "id")
    )


def live_calibration_get(
    *, shop: Shop, now: datetime, since: datetime, bins: int = BINS
) -> CalibrationReport | None:
    """The live scores given in `[since, now)` against how their sessions ended.

    Every `ScoreSample` (a session's first score after each number of events) of a session that
    has ended (no event for `LIVE_WINDOW`, so it can no longer buy) is one prediction; the
    outcome is the session's purchase. None when no such session has been scored.
    """
    rows = list(
        ScoreSample.objects.filter(
            shop=shop,
            scored_at__gte=since,
            scored_at__lt=now,
            session__ended_at__lt=now - LIVE_WINDOW,
        ).values_list("score", "session__is_converted")
    )
    if not rows:
        return None
    scores, labels = zip(*rows, strict=True)
    return calibration_report(
        labels=np.asarray(labels, dtype=np.int8), scores=np.asarray(scores), bins=bins
    )


def customer_profile_activity(*, shop: Shop, person_id: int) -> dict[str, Any]:
    """What a customer profile (segments' `customer_profile`, settings.CUSTOMER_PROFILE_HOOKS)
    shows from this app: the latest conversion score of the person's sessions, the
    experiments they were exposed to and the notifications campaigns decided for them (a
    holdout decision is listed too: it is why nothing was shown)."""
    score = (
        ConversionScore.objects.filter(shop=shop, person_id=person_id)
        .select_related("model_version")
        .order_by("-scored_at", "-id")
        .first()
    )
    exposures = (
        ExperimentExposure.objects.filter(experiment__shop=shop, person_id=person_id)
        .order_by("-first_exposed_at", "-id")
        .values(
            "experiment_id",
            "experiment__key",
            "experiment__name",
            "phase",
            "variant",
            "first_exposed_at",
            "exposure_count",
        )[:PROFILE_EXPOSURES_MAX]
    )
    notifications = (
        CampaignDecision.objects.filter(shop=shop, person_id=person_id)
        .order_by("-created_at", "-id")
        .values(
            "campaign_id", "campaign__name", "session_id", "arm", "is_holdout", "reason",
            "title", "discount_code", "created_at",
        )[:PROFILE_EXPOSURES_MAX]
    )  # fmt: skip
    return {
        "notifications": [
            {
                "campaign_id": row["campaign_id"],
                "campaign": row["campaign__name"],
                "session_id": row["session_id"],
                "arm": row["arm"],
                "is_holdout": row["is_holdout"],
                "reason": row["reason"],
                "title": row["title"],
                "discount_code": row["discount_code"],
                "decided_at": row["created_at"],
            }
            for row in notifications
        ],
        "conversion_score": None
        if score is None
        else {
            "session_id": score.session_id,
            "score": score.score,
            "scored_at": score.scored_at,
            "model_version": score.model_version.version if score.model_version else None,
        },
        "experiments": [
            {
                "experiment_id": row["experiment_id"],
                "key": row["experiment__key"],
                "name": row["experiment__name"],
                "phase": row["phase"],
                "variant": row["variant"],
                "first_exposed_at": row["first_exposed_at"],
                "exposure_count": row["exposure_count"],
            }
            for row in exposures
        ],
    }
