"""Every write of the notifications app: the model registry, training runs and live scores."""

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection, transaction

from events.models import Shop
from notifications import dataset, scoring, selectors
from notifications.models import ConversionScore, ModelVersion, ScoreSample

if TYPE_CHECKING:
    from notifications.model import TrainingConfig

logger = logging.getLogger(__name__)

MODEL_NAME = "conversion"


@transaction.atomic
def model_version_activate(*, model_version: ModelVersion) -> ModelVersion:
    """Make this the version that scores its shop; the previous one is deactivated."""
    ModelVersion.objects.select_for_update().filter(
        shop=model_version.shop, name=model_version.name, is_active=True
    ).exclude(pk=model_version.pk).update(is_active=False)
    model_version.is_active = True
    model_version.save(update_fields=["is_active"])
    return model_version


def model_version_register(
    *, shop: Shop | None, version: int, path: Path, card: dict, trained_at: datetime
) -> ModelVersion:
    return ModelVersion.objects.create(
        shop=shop,
        name=MODEL_NAME,
        version=version,
        path=str(path),
        metrics=card,
        trained_at=trained_at,
    )


def conversion_model_train(
    *,
    shop: Shop,
    now: datetime,
    csv_path: str | None = None,
    config: "TrainingConfig | None" = None,
    progress: Callable[[str], None] | None = None,
) -> ModelVersion:
    """Train on the shop's sessions (or a Taobao CSV), export, register and activate."""
    from notifications import model as conversion_model

    say = progress or (lambda message: None)
    if csv_path:
        say(f"reading {csv_path}")
        frame = dataset.taobao_sessionize(dataset.taobao_read(csv_path))
    else:
        say(f"reading the events of {shop.domain}")
        frame = selectors.events_frame(shop=shop, until=now)
    say(f"{len(frame)} events in {frame['session_key'].nunique()} sessions")
    split = dataset.split_by_time(dataset.sequences_build(frame))
    say(f"split: {len(split.train)} train, {len(split.validation)} val, {len(split.test)} test")
    result = conversion_model.train_and_evaluate(split, config=config, progress=say)
    version = max(selectors.model_version_next_number(name=MODEL_NAME), _next_version_on_disk())
    result.card.update({"version": version, "shop": shop.domain, "trained_at": now.isoformat()})
    path = conversion_model.model_export(
        result.model, path=Path(settings.MODEL_DIR) / MODEL_NAME / str(version), card=result.card
    )
    say(f"exported {path}")
    with transaction.atomic():
        model_version = model_version_register(
            shop=shop, version=version, path=path, card=result.card, trained_at=now
        )
        model_version_activate(model_version=model_version)
    return model_version


def _next_version_on_disk() -> int:
    root = Path(settings.MODEL_DIR) / MODEL_NAME
    numbers = [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
    return max(numbers, default=0) + 1


def scores_refresh(*, shop_id: int, now: datetime) -> int:
    """Score every live session of the shop that has not bought yet; returns how many.

    Idempotent: a session has one score row, overwritten with the latest score, and one sample
    per number of events seen (the first score of that prefix, kept for the live calibration
    report). A session that holds a purchase is not scored again: the question "will it buy" is
    answered, and the live list shows it as bought (its last score before the purchase stays).
    """
    shop = Shop.objects.get(pk=shop_id)
    model_version = selectors.model_version_active(shop=shop)
    if model_version is None:
        return 0
    live = selectors.sessions_live(shop=shop, now=now).filter(is_converted=False)
    sessions = dict(live.values_list("id", "person_id"))
    if not sessions:
        return 0
    frame = _unbought_events(shop=shop, session_ids=list(sessions), now=now)
    if frame.empty:
        return 0
    event_counts = frame.groupby(frame["session_key"].astype(str)).size()
    # The context input is the persons' history before each live session: their earlier events.
    history = selectors.events_frame(
        shop=shop, person_ids=sorted(set(sessions.values())), until=now
    )
    batch = dataset.sequences_build(frame, history=history)
    probabilities = np.asarray(scoring.scores_predict(model_version=model_version, batch=batch))
    scored = list(zip(batch.session_keys, probabilities.tolist(), strict=True))
    _scores_upsert(
        [
            ConversionScore(
                shop=shop,
                session_id=int(key),
                person_id=sessions[int(key)],
                score=score,
                model_version=model_version,
                scored_at=now,
            )
            for key, score in scored
        ]
    )
    _samples_insert(
        [
            ScoreSample(
                shop=shop,
                session_id=int(key),
                event_count=int(event_counts[key]),
                score=score,
                model_version=model_version,
                scored_at=now,
            )
            for key, score in scored
        ]
    )
    return len(scored)


def _unbought_events(*, shop: Shop, session_ids: list[int], now: datetime) -> pd.DataFrame:
    """The sessions' events up to `now`, without the sessions that hold a purchase."""
    frame = selectors.events_frame(shop=shop, session_ids=session_ids, until=now)
    if frame.empty:
        return frame
    # The pipeline may not have flagged a purchase it has just assigned; the events have it.
    bought = set(frame.loc[frame["type"].eq(dataset.PURCHASE), "session_key"].astype(str))
    return frame[~frame["session_key"].astype(str).isin(bought)]


def _conflict_target(fields: list[str]) -> list[str] | None:
    # MySQL's ON DUPLICATE KEY UPDATE takes no conflict target; SQLite's ON CONFLICT needs one.
    return fields if connection.features.supports_update_conflicts_with_target else None


def _scores_upsert(rows: list[ConversionScore]) -> None:
    fields = ["score", "model_version", "person", "scored_at"]
    ConversionScore.objects.bulk_create(
        rows,
        batch_size=1000,
        update_conflicts=True,
        update_fields=fields,
        unique_fields=_conflict_target(["session"]),
    )


def _samples_insert(rows: list[ScoreSample]) -> None:
    ScoreSample.objects.bulk_create(
        rows,
        batch_size=1000,
        # A prefix already scored keeps its first score (what was shown at the time): on the
        # unique key the "update" rewrites event_count with itself. Unlike INSERT IGNORE this
        # swallows nothing but that key's conflict.
        update_conflicts=True,
        update_fields=["event_count"],
        unique_fields=_conflict_target(["session", "event_count"]),
    )
