"""Every read of the notifications app that an interface needs."""

from datetime import datetime, timedelta

import pandas as pd
from django.db.models import QuerySet

from events.models import Event, Session, Shop
from notifications.dataset import FRAME_COLUMNS
from notifications.models import ConversionScore, ModelVersion

LIVE_WINDOW = timedelta(minutes=30)


def events_frame(
    *,
    shop: Shop,
    session_ids: list[int] | None = None,
    person_ids: list[int] | None = None,
    until: datetime | None = None,
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
    if until is not None:
        events = events.filter(occurred_at__lt=until)
    rows = events.order_by("session_id", "occurred_at", "id").values_list(
        "session_id",
        "occurred_at",
        "type",
        "product_price",
        "product_category",
        "session__person_id",
    )
    frame = pd.DataFrame.from_records(list(rows.iterator(chunk_size=5000)), columns=FRAME_COLUMNS)
    frame["price"] = pd.to_numeric(frame["price"], errors="coerce")
    return frame


def sessions_live(*, shop: Shop, now: datetime) -> QuerySet[Session]:
    """Sessions with an event in the last 30 minutes (the sessions a notification can reach)."""
    return Session.objects.filter(shop=shop, ended_at__gte=now - LIVE_WINDOW, ended_at__lte=now)


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


def conversion_scores_live(*, shop: Shop, now: datetime) -> QuerySet[ConversionScore]:
    """Scores of live sessions, most likely buyers first."""
    return (
        ConversionScore.objects.filter(
            shop=shop, session__ended_at__gte=now - LIVE_WINDOW, session__ended_at__lte=now
        )
        .select_related("model_version")
        .order_by("-score", "id")
    )
