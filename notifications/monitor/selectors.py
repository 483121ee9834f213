"""Reads of the model monitoring: a shop's thresholds, the live scores with their outcomes, and
what the Model page and `GET /notifications/model/health/` show."""

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from events.models import Shop
from notifications.models import ModelHealth, ModelMonitorSettings, ModelVersion, ScoreSample
from notifications.selectors import LIVE_WINDOW

# The API's and the page's history: at most this many days back.
HISTORY_DAYS_MAX = 365
RECENT_VERSIONS = 5


@dataclass(frozen=True, slots=True)
class Thresholds:
    window_days: int
    min_samples: int
    min_per_class: int
    auc_floor: float
    auc_margin: float
    ece_max: float
    psi_max: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ScoreOutcome:
    model_version_id: int
    session_id: int
    score: float
    is_converted: bool


def thresholds_get(*, shop: Shop) -> Thresholds:
    """The shop's `ModelMonitorSettings`, or the field defaults without a row."""
    row = ModelMonitorSettings.objects.filter(shop=shop).first() or ModelMonitorSettings()
    return Thresholds(
        window_days=row.window_days,
        min_samples=row.min_samples,
        min_per_class=row.min_per_class,
        auc_floor=row.auc_floor,
        auc_margin=row.auc_margin,
        ece_max=row.ece_max,
        psi_max=row.psi_max,
    )


def score_outcomes_list(*, shop: Shop, since: datetime, now: datetime) -> list[ScoreOutcome]:
    """Every live score given in `[since, now)` of a session that has ended (no event for
    `LIVE_WINDOW`, so it can no longer buy), with how the session ended."""
    rows = ScoreSample.objects.filter(
        shop=shop,
        scored_at__gte=since,
        scored_at__lt=now,
        session__ended_at__lt=now - LIVE_WINDOW,
        model_version__isnull=False,
    ).values_list("model_version_id", "session_id", "score", "session__is_converted")
    return [
        ScoreOutcome(model_version_id=v, session_id=s, score=score, is_converted=bool(c))
        for v, s, score, c in rows.iterator(chunk_size=10_000)
    ]


def _card_figures(card: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a model card (missing parts are None)."""
    metrics = card.get("metrics") or {}
    test = (card.get("calibration") or {}).get("test") or {}
    monitoring = card.get("monitoring") or {}
    return {
        "test_roc_auc": metrics.get("roc_auc"),
        "test_pr_auc": metrics.get("pr_auc"),
        "test_roc_auc_at": metrics.get("roc_auc_at") or {},
        "test_prefix_roc_auc": monitoring.get("test_prefix_roc_auc"),
        "test_brier": test.get("brier"),
        "test_ece": test.get("ece"),
        "target_ece": (card.get("calibration") or {}).get("target_ece"),
        "sizes": card.get("sizes") or {},
        "class_balance": card.get("class_balance") or {},
        "data_window": card.get("data_window") or {},
        "promotion": card.get("promotion"),
    }


def _version_row(version: ModelVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "is_active": version.is_active,
        "trained_at": version.trained_at,
        "card": _card_figures(version.metrics or {}),
    }


def model_health_page_get(*, shop: Shop, now: datetime, days: int) -> dict[str, Any]:
    """The active version with its card figures, the shop's thresholds, the recent versions
    (with why a retrained one was or was not activated) and `days` days of checks, oldest
    first."""
    versions = list(
        ModelVersion.objects.filter(shop=shop, name="conversion").order_by("-version")[
            :RECENT_VERSIONS
        ]
    )
    active = next((v for v in versions if v.is_active), None)
    if active is None:
        active = ModelVersion.objects.filter(shop=shop, name="conversion", is_active=True).first()
    history = (
        ModelHealth.objects.filter(shop=shop, day__gt=(now - timedelta(days=days)).date())
        .select_related("model_version")
        .order_by("day", "model_version__version")
    )
    return {
        "active_model": None if active is None else _version_row(active),
        "versions": [_version_row(v) for v in versions],
        "thresholds": thresholds_get(shop=shop).as_dict(),
        "history": [
            {
                "day": row.day,
                "model_version": row.model_version.version,
                "is_active_version": row.model_version_id == (active.pk if active else None),
                "status": row.status,
                "window_start": row.window_start,
                "window_end": row.window_end,
                "sample_count": row.sample_count,
                "session_count": row.session_count,
                "positive_count": row.positive_count,
                "positive_rate": row.positive_rate,
                "mean_score": row.mean_score,
                "roc_auc": row.roc_auc,
                "reference_auc": row.reference_auc,
                "brier": row.brier,
                "ece": row.ece,
                "psi": row.psi,
                "bins": row.bins,
                "drift": row.drift,
                "problems": row.problems,
                "checked_at": row.checked_at,
            }
            for row in history
        ],
    }
