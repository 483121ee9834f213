"""Every write of the notifications app: the model registry, training runs and live scores."""

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import transaction
from django.db.models import Case, QuerySet, Value, When

from clickserver.chunking import chunks
from clickserver.sql import CHUNK, rows_write
from events.models import Shop
from notifications import dataset, scoring, selectors
from notifications.models import (
    CampaignDecision,
    ConversionScore,
    ExperimentExposure,
    ModelVersion,
    ScoreSample,
)
from notifications.monitor.metrics import roc_auc

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


# A retrained model replaces the active one unless its test ROC-AUC is lower than the active
# one's on the same test split by more than this (seed noise is about 0.006 on the Taobao head).
PROMOTION_TOLERANCE = 0.005


def conversion_model_train(
    *,
    shop: Shop,
    now: datetime,
    csv_path: str | None = None,
    config: "TrainingConfig | None" = None,
    progress: Callable[[str], None] | None = None,
) -> ModelVersion:
    """Train on the shop's sessions (or a Taobao CSV), export and register; activate the new
    version unless it scores worse than the active one on the same test split (the card's
    `promotion` says which and why)."""
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
    promotion = model_promotion_decide(
        active=selectors.model_version_active(shop=shop),
        test=split.test,
        new_roc_auc=result.card["metrics"]["roc_auc"],
    )
    result.card.update(
        {
            "version": version,
            "shop": shop.domain,
            "trained_at": now.isoformat(),
            "promotion": promotion,
        }
    )
    path = conversion_model.model_export(
        result.model, path=Path(settings.MODEL_DIR) / MODEL_NAME / str(version), card=result.card
    )
    say(f"exported {path}")
    with transaction.atomic():
        model_version = model_version_register(
            shop=shop, version=version, path=path, card=result.card, trained_at=now
        )
        if promotion["is_activated"]:
            model_version_activate(model_version=model_version)
    log = logger.info if promotion["is_activated"] else logger.warning
    log(
        "conversion model v%s of %s %s: %s",
        version,
        shop.domain,
        "activated" if promotion["is_activated"] else "registered, not activated",
        promotion["reason"],
    )
    say(promotion["reason"])
    return model_version


def model_promotion_decide(
    *, active: ModelVersion | None, test: dataset.SequenceBatch, new_roc_auc: float | None
) -> dict[str, Any]:
    """Whether a new model (test ROC-AUC `new_roc_auc` on whole sessions) replaces `active`,
    which is scored here on the same test sessions."""
    decision = {
        "is_activated": True,
        "new_roc_auc": new_roc_auc,
        "active_version": None if active is None else active.version,
        "active_roc_auc": None,
        "tolerance": PROMOTION_TOLERANCE,
    }
    if active is None:
        return decision | {"reason": "no version was active"}
    if not (Path(active.path) / "saved_model.pb").is_file():
        return decision | {
            "reason": f"the active v{active.version}'s files are missing, so it cannot be compared"
        }
    # The card's figure for the new model is sklearn's, rounded to 4 places: the same here.
    measured = roc_auc(test.labels, scoring.InProcessScorer.for_path(active.path).predict(test))
    active_roc_auc = None if measured is None else round(measured, 4)
    decision["active_roc_auc"] = active_roc_auc
    if new_roc_auc is None or active_roc_auc is None:
        return decision | {"reason": "the test split has one outcome only: no AUC to compare"}
    if new_roc_auc + PROMOTION_TOLERANCE < active_roc_auc:
        return decision | {
            "is_activated": False,
            "reason": (
                f"test ROC-AUC {new_roc_auc:.4f} is worse than the active v{active.version}'s "
                f"{active_roc_auc:.4f} on the same test split (tolerance "
                f"{PROMOTION_TOLERANCE}); v{active.version} stays active"
            ),
        }
    return decision | {
        "reason": (
            f"test ROC-AUC {new_roc_auc:.4f} against the active v{active.version}'s "
            f"{active_roc_auc:.4f} on the same test split: not worse"
        )
    }


def _next_version_on_disk() -> int:
    root = Path(settings.MODEL_DIR) / MODEL_NAME
    numbers = [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
    return max(numbers, default=0) + 1


def scores_refresh(*, shop_id: int, now: datetime) -> int:
    """Score the live sessions of the shop that have not bought yet; returns how many.

    Only the sessions with events the stored score has not seen (or scored by another model than
    the active one) are read and scored: every batch used to rescore every live session with its
    person's whole history, so the cost grew with the live sessions, not with the batch.

    Idempotent: a session has one score row, overwritten with the latest score, and one sample
    per number of events seen (the first score of that prefix, kept for the live calibration
    report). A session that holds a purchase is not scored again: the question "will it buy" is
    answered, and the live list shows it as bought (its last score before the purchase stays).
    """
    shop = Shop.objects.get(pk=shop_id)
    model_version = selectors.model_version_active(shop=shop)
    if model_version is None:
        return 0
    stale = selectors.sessions_to_score(shop=shop, now=now, model_version=model_version)
    sessions = {pk: person_id for pk, person_id, _count in stale}
    counts = {pk: count for pk, _person_id, count in stale}
    if not sessions:
        return 0
    everything = selectors.events_frame(shop=shop, session_ids=list(sessions), until=now)
    frame = _unbought(everything)
    if frame.empty:
        return 0
    event_counts = frame.groupby(frame["session_key"].astype(str)).size()
    # The context input is the persons' history before each live session: their earlier events.
    # The sessions just read are part of it; only the persons' other sessions are read again.
    others = selectors.events_frame(
        shop=shop,
        person_ids=sorted(set(sessions.values())),
        until=now,
        without_session_ids=list(sessions),
    )
    history = pd.concat([others, everything], ignore_index=True) if len(others) else everything
    batch = dataset.sequences_build(frame, history=history)
    probabilities = np.asarray(scoring.scores_predict(model_version=model_version, batch=batch))
    scored = list(zip(batch.session_keys, probabilities.tolist(), strict=True))
    _scores_upsert(
        [
            # Ids, not instances: setting a foreign key to an instance checks the database
            # router per row (0.5 s for 10,000 rows).
            ConversionScore(
                shop_id=shop.pk,
                session_id=int(key),
                person_id=sessions[int(key)],
                score=score,
                model_version_id=model_version.pk,
                scored_at=now,
                event_count=counts[int(key)],
            )
            for key, score in scored
        ]
    )
    _samples_insert(
        [
            ScoreSample(
                shop_id=shop.pk,
                session_id=int(key),
                event_count=int(event_counts[key]),
                score=score,
                model_version_id=model_version.pk,
                scored_at=now,
            )
            for key, score in scored
        ]
    )
    return len(scored)


def _unbought(frame: pd.DataFrame) -> pd.DataFrame:
    """The events without the sessions that hold a purchase."""
    if frame.empty:
        return frame
    # The pipeline may not have flagged a purchase it has just assigned; the events have it.
    bought = set(frame.loc[frame["type"].eq(dataset.PURCHASE), "session_key"].astype(str))
    return frame[~frame["session_key"].astype(str).isin(bought)]


def _scores_upsert(rows: list[ConversionScore]) -> None:
    # One bulk writer (clickserver/sql.py): a multi-row INSERT … ON DUPLICATE KEY UPDATE, several
    # times faster than bulk_create's for the thousands of live sessions a busy shop rescores.
    rows_write(
        ConversionScore._meta.db_table,
        [
            "shop_id",
            "session_id",
            "person_id",
            "score",
            "model_version_id",
            "scored_at",
            "event_count",
        ],
        [
            (
                r.shop_id,
                r.session_id,
                r.person_id,
                r.score,
                r.model_version_id,
                r.scored_at,
                r.event_count,
            )
            for r in rows
        ],
        on_conflict="update",
        conflict_columns=("session_id",),
        update_columns=["score", "model_version_id", "person_id", "scored_at", "event_count"],
    )


def _samples_insert(rows: list[ScoreSample]) -> None:
    # A prefix already scored keeps its first score (what was shown at the time): on the unique
    # key the "update" rewrites event_count with itself. Unlike INSERT IGNORE this swallows
    # nothing but that key's conflict.
    rows_write(
        ScoreSample._meta.db_table,
        ["shop_id", "session_id", "event_count", "score", "model_version_id", "scored_at"],
        [
            (r.shop_id, r.session_id, r.event_count, r.score, r.model_version_id, r.scored_at)
            for r in rows
        ],
        on_conflict="update",
        conflict_columns=("session_id", "event_count"),
        update_columns=["event_count"],
    )


def persons_merged(*, survivor_id: int, loser_ids: list[int]) -> None:
    """settings.PERSON_MERGE_HOOKS: keep the merged persons' live scores and campaign decisions.

    The sessions move to the survivor (events); their scores and decisions follow them rather
    than go with the deleted persons: a lost decision would let its session be decided (and
    notified) again and would drop it from the campaign's results and caps.
    """
    ConversionScore.objects.filter(person_id__in=loser_ids).update(person_id=survivor_id)
    CampaignDecision.objects.filter(person_id__in=loser_ids).update(person_id=survivor_id)


def sessions_replaced(*, replaced: dict[int, int]) -> None:
    """settings.SESSIONS_REPLACED_HOOKS: a joined visit keeps its decisions, score and exposures.

    A decision moves to the successor session unless the successor already has one of the same
    campaign (one per campaign and session); such a decision keeps its row, its delivery and its
    place in the results and caps with no session (SET_NULL), so the merged visit is still
    "already decided" by the other. A live score moves only where the successor has none (the
    next batch scores the successor anyway); score samples, a prefix of a visit that no longer
    exists, go with it.
    """
    for chunk in chunks(sorted(replaced), CHUNK):
        moving = list(
            CampaignDecision.objects.filter(session_id__in=chunk).values_list(
                "pk", "campaign_id", "session_id"
            )
        )
        taken = set(
            CampaignDecision.objects.filter(
                session_id__in={replaced[old] for _pk, _campaign, old in moving}
            ).values_list("campaign_id", "session_id")
        )
        for pk, campaign_id, old in moving:
            if (campaign_id, replaced[old]) not in taken:
                taken.add((campaign_id, replaced[old]))
                CampaignDecision.objects.filter(pk=pk).update(session_id=replaced[old])
        scored = set(
            ConversionScore.objects.filter(
                session_id__in={replaced[old] for old in chunk}
            ).values_list("session_id", flat=True)
        )
        scores_moving = {}
        for old in chunk:
            if replaced[old] not in scored:
                scored.add(replaced[old])
                scores_moving[old] = replaced[old]
        _session_ids_replace(ConversionScore.objects.all(), scores_moving)
        exposures_moving = {old: replaced[old] for old in chunk}
        _session_ids_replace(ExperimentExposure.objects.all(), exposures_moving)


def _session_ids_replace(queryset: QuerySet, replaced: dict[int, int]) -> None:
    """One UPDATE … SET session_id = CASE … for the rows of these sessions."""
    if replaced:
        queryset.filter(session_id__in=replaced).update(
            session_id=Case(
                *(When(session_id=old, then=Value(new)) for old, new in replaced.items())
            )
        )
