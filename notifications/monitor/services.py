"""The daily check of the conversion model in production (docs/conversion-model.md, *Monitoring
in production*): the live scores given over the last days against how their sessions ended,
stored per shop, model version and day; a failed check of the active version is an anomaly of
kind `model` in analytics' anomaly and alert channel, resolved when the check passes again."""

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import numpy as np
from django.db import transaction

from analytics.models import Anomaly, AnomalyKind, Severity
from analytics.services.anomalies import (
    ACTIVE,
    AnomalyIn,
    anomalies_resolve_returned,
    anomalies_store,
)
from analytics.services.detection import alerts_dispatch_schedule
from events.models import Shop
from notifications.calibration import calibration_report
from notifications.models import ModelHealth, ModelHealthStatus, ModelVersion
from notifications.monitor import selectors
from notifications.monitor.metrics import live_shares, psi, reference_from_card, roc_auc
from notifications.monitor.selectors import ScoreOutcome, Thresholds

logger = logging.getLogger(__name__)

AUC_METRIC = "model_roc_auc"
ECE_METRIC = "model_ece"
PSI_METRIC = "model_score_psi"
DETECTOR = "model_health"


@dataclass(frozen=True, slots=True)
class Problem:
    metric: str
    observed: float
    threshold: float
    detail: str


@dataclass(frozen=True, slots=True)
class HealthCheckResult:
    checked: list[int]  # ModelHealth ids written
    status: str | None  # the active version's, None without live scores of it
    opened: list[int]
    resolved: int


def _figures(
    outcomes: list[ScoreOutcome], *, card: dict[str, Any], thresholds: Thresholds
) -> dict[str, Any]:
    """Every figure of one version's check; the judgeable ones are not None."""
    scores = np.asarray([o.score for o in outcomes], dtype=np.float64)
    labels = np.asarray([o.is_converted for o in outcomes], dtype=np.int8)
    positives = int(labels.sum())
    enough = (
        len(outcomes) >= thresholds.min_samples
        and positives >= thresholds.min_per_class
        and len(outcomes) - positives >= thresholds.min_per_class
    )
    report = calibration_report(labels=labels, scores=scores)
    reference = reference_from_card(card)
    drift: dict[str, Any] = {}
    drift_index = None
    if reference is not None:
        live = live_shares(scores, reference)
        drift_index = round(psi(expected=reference.shares, actual=live), 4)
        drift = {
            "edges": reference.edges,
            "reference": [round(s, 4) for s in reference.shares],
            "live": [round(s, 4) for s in live],
            "source": reference.source,
        }
    auc = roc_auc(labels, scores)
    return {
        "enough": enough,
        "sample_count": len(outcomes),
        "session_count": len({o.session_id for o in outcomes}),
        "positive_count": positives,
        "mean_score": report.mean_predicted,
        "positive_rate": report.positive_rate,
        "roc_auc": None if auc is None else round(auc, 4),
        "reference_auc": (card.get("monitoring") or {}).get("test_prefix_roc_auc"),
        "brier": report.brier,
        "ece": report.ece,
        "psi": drift_index,
        "bins": [
            {
                "low": b.low,
                "high": b.high,
                "count": b.count,
                "mean_predicted": b.mean_predicted,
                "observed_rate": b.observed_rate,
            }
            for b in report.bins
        ],
        "drift": drift,
    }


def health_judge(figures: dict[str, Any], *, thresholds: Thresholds) -> list[Problem]:
    """The checks that fail. Without enough samples (or both outcomes) nothing is judged."""
    if not figures["enough"]:
        return []
    problems = []
    auc, reference = figures["roc_auc"], figures["reference_auc"]
    if auc is not None:
        bound = thresholds.auc_floor
        detail = f"below the floor {thresholds.auc_floor:.2f}"
        if reference is not None and reference - thresholds.auc_margin > bound:
            bound = reference - thresholds.auc_margin
            detail = (
                f"below the test split's {reference:.3f} minus the margin "
                f"{thresholds.auc_margin:.2f}"
            )
        if auc < bound:
            problems.append(Problem(AUC_METRIC, auc, round(bound, 4), detail))
    if figures["ece"] is not None and figures["ece"] > thresholds.ece_max:
        problems.append(
            Problem(ECE_METRIC, figures["ece"], thresholds.ece_max, "above the calibration bound")
        )
    if figures["psi"] is not None and figures["psi"] > thresholds.psi_max:
        problems.append(
            Problem(PSI_METRIC, figures["psi"], thresholds.psi_max, "above the drift bound")
        )
    return problems


def _judged_metrics(figures: dict[str, Any]) -> list[str]:
    """The metrics this check could judge (a passed one resolves its open anomaly)."""
    if not figures["enough"]:
        return []
    judged = [ECE_METRIC]
    if figures["roc_auc"] is not None:
        judged.append(AUC_METRIC)
    if figures["psi"] is not None:
        judged.append(PSI_METRIC)
    return judged


def _severity(problem: Problem) -> str:
    # Twice as far past the bound (or an AUC at chance) is critical.
    if problem.metric == AUC_METRIC:
        return Severity.CRITICAL if problem.observed <= 0.55 else Severity.WARNING
    return Severity.CRITICAL if problem.observed > 2 * problem.threshold else Severity.WARNING


def _sentence(problem: Problem, *, version: int, figures: dict[str, Any], days: int) -> str:
    names = {
        AUC_METRIC: "ROC-AUC",
        ECE_METRIC: "expected calibration error",
        PSI_METRIC: "score drift (PSI against the test split)",
    }
    return (
        f"The conversion model v{version}'s {names[problem.metric]} on the live scores of the "
        f"last {days} days was {problem.observed:.3f}, {problem.detail} "
        f"({problem.threshold:.3f}); {figures['sample_count']:,} scores of "
        f"{figures['session_count']:,} finished sessions, {figures['positive_count']:,} of "
        f"them bought."
    )


def _anomalies(
    problems: list[Problem],
    *,
    shop: Shop,
    version: ModelVersion,
    figures: dict[str, Any],
    thresholds: Thresholds,
    window_start: datetime,
    now: datetime,
) -> list[AnomalyIn]:
    subject = f"model:{version.version}"
    found = []
    for problem in problems:
        # One anomaly per episode: while it is active, each day's check updates the same row
        # (its window start is the day the episode began); a new episode opens a new row.
        open_row = (
            Anomaly.objects.filter(
                shop=shop, metric=problem.metric, subject=subject, status__in=ACTIVE
            )
            .order_by("-window_start")
            .first()
        )
        is_auc = problem.metric == AUC_METRIC
        found.append(
            AnomalyIn(
                kind=AnomalyKind.MODEL,
                metric=problem.metric,
                subject=subject,
                window_start=open_row.window_start if open_row else window_start,
                window_end=now,
                observed=problem.observed,
                expected=problem.threshold,
                band_low=problem.threshold if is_auc else None,
                band_high=None if is_auc else problem.threshold,
                score=None,
                direction="drop" if is_auc else "spike",
                severity=_severity(problem),
                detector=DETECTOR,
                explanation=_sentence(
                    problem, version=version.version, figures=figures, days=thresholds.window_days
                ),
                details={
                    "model_version": version.version,
                    "sample_count": figures["sample_count"],
                    "session_count": figures["session_count"],
                    "roc_auc": figures["roc_auc"],
                    "ece": figures["ece"],
                    "psi": figures["psi"],
                },
            )
        )
    return found


def model_health_check(*, shop_id: int, now: datetime) -> HealthCheckResult:
    """Check every model version that scored the shop's finished sessions in the window; judge
    the active one. Idempotent per day: a rerun rewrites the day's rows and updates its
    anomalies instead of adding any."""
    shop = Shop.objects.get(pk=shop_id)
    thresholds = selectors.thresholds_get(shop=shop)
    window_start = now - timedelta(days=thresholds.window_days)
    by_version: dict[int, list[ScoreOutcome]] = defaultdict(list)
    for outcome in selectors.score_outcomes_list(shop=shop, since=window_start, now=now):
        by_version[outcome.model_version_id].append(outcome)
    versions = ModelVersion.objects.in_bulk(list(by_version))
    checked, status, opened, resolved = [], None, [], 0
    with transaction.atomic():
        for version_id, outcomes in sorted(by_version.items()):
            version = versions[version_id]
            figures = _figures(outcomes, card=version.metrics or {}, thresholds=thresholds)
            problems = health_judge(figures, thresholds=thresholds)
            row_status = (
                ModelHealthStatus.INSUFFICIENT
                if not figures["enough"]
                else ModelHealthStatus.DEGRADED
                if problems
                else ModelHealthStatus.HEALTHY
            )
            row, _ = ModelHealth.objects.update_or_create(
                shop=shop,
                model_version=version,
                day=now.date(),
                defaults={
                    **{k: v for k, v in figures.items() if k != "enough"},
                    "window_start": window_start,
                    "window_end": now,
                    "status": row_status,
                    "problems": [
                        {
                            "metric": p.metric,
                            "observed": p.observed,
                            "threshold": p.threshold,
                            "detail": p.detail,
                        }
                        for p in problems
                    ],
                    "thresholds": thresholds.as_dict(),
                    "checked_at": now,
                },
            )
            checked.append(row.pk)
            if not version.is_active:
                continue
            status = row_status
            stored = anomalies_store(
                shop_id=shop.pk,
                found=_anomalies(
                    problems,
                    shop=shop,
                    version=version,
                    figures=figures,
                    thresholds=thresholds,
                    window_start=window_start,
                    now=now,
                ),
                now=now,
            )
            opened = stored.opened
            failed = {p.metric for p in problems}
            for metric in _judged_metrics(figures):
                if metric not in failed:
                    resolved += anomalies_resolve_returned(
                        shop_id=shop.pk,
                        metric=metric,
                        before=now,
                        now=now,
                        reason="the model's check passed again",
                    )
            _log(shop, version, row_status, problems, figures)
            to_alert = stored.opened + stored.escalated
            if to_alert:
                transaction.on_commit(partial(alerts_dispatch_schedule, anomaly_ids=to_alert))
    return HealthCheckResult(checked=checked, status=status, opened=opened, resolved=resolved)


def _log(
    shop: Shop,
    version: ModelVersion,
    status: str,
    problems: list[Problem],
    figures: dict[str, Any],
) -> None:
    if problems:
        logger.warning(
            "conversion model v%s of %s degraded: %s",
            version.version,
            shop.domain,
            "; ".join(
                f"{p.metric} {p.observed:.3f} {p.detail} ({p.threshold:.3f})" for p in problems
            ),
        )
        return
    logger.info(
        "conversion model v%s of %s %s: auc %s, ece %s, psi %s over %s scores",
        version.version,
        shop.domain,
        status,
        figures["roc_auc"],
        figures["ece"],
        figures["psi"],
        figures["sample_count"],
    )
