"""The daily model check on MariaDB with synthetic live scores: healthy → a healthy row and no
anomaly; degraded (scores that no longer rank, a shifted distribution, miscalibrated) → a
degraded row, three `model` anomalies and their alerts through a real webhook receiver and a
real SMTP server; degraded again the next day → the same anomalies, nothing sent twice;
healthy again → resolved."""

import json
import logging
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from analytics.models import AlertDelivery, Anomaly, AnomalyStatus, DeliveryStatus
from analytics.services.alerts import alert_rule_create
from analytics.tests.test_alerts import webhook_rule
from events.models import Person, Session
from events.tests.factories import ShopFactory
from notifications.calibration import calibration_report
from notifications.models import (
    ModelHealth,
    ModelHealthStatus,
    ModelMonitorSettings,
    ModelVersion,
    ScoreSample,
)
from notifications.monitor.metrics import live_shares, psi, reference_from_card, score_distribution
from notifications.monitor.services import model_health_check
from notifications.tasks import model_health_check_task
from notifications.tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 3, 10, 5, 17, tzinfo=UTC)
SESSIONS = 600
REFERENCE_AUC = 0.78


def card() -> dict:
    rng = np.random.default_rng(11)
    return {
        "metrics": {"roc_auc": 0.81},
        "monitoring": {
            "test_prefix_roc_auc": REFERENCE_AUC,
            "score_distribution": score_distribution(rng.beta(1, 4, 5000)),
        },
    }


def healthy(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated scores from the training distribution: the session buys with its score."""
    rng = np.random.default_rng(seed)
    scores = rng.beta(1, 4, SESSIONS)
    return scores, rng.random(SESSIONS) < scores


def degraded(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores around 0.5 that say nothing: 10 % buy whatever the score."""
    rng = np.random.default_rng(seed)
    return rng.beta(6, 6, SESSIONS), rng.random(SESSIONS) < 0.1


def scores_given(shop, version, *, now, scores, bought) -> None:
    """One finished session per score (ended 11 hours before `now`), scored after one event."""
    person = Person.objects.create(shop=shop, first_seen_at=now, last_seen_at=now)
    started = now - timedelta(hours=12)
    sessions = Session.objects.bulk_create(
        Session(
            shop=shop,
            person=person,
            started_at=started,
            ended_at=started + timedelta(hours=1),
            is_converted=bool(b),
        )
        for b in bought
    )
    ScoreSample.objects.bulk_create(
        ScoreSample(
            shop=shop,
            session=session,
            event_count=1,
            score=float(score),
            model_version=version,
            scored_at=started,
        )
        for session, score in zip(sessions, scores, strict=True)
    )


@pytest.fixture
def monitored(shop):
    ModelMonitorSettings.objects.create(shop=shop, window_days=1)
    return ModelVersionFactory(shop=shop, version=4, metrics=card(), is_active=True)


def test_a_healthy_day_stores_the_figures_sklearn_computes_and_raises_nothing(shop, monitored):
    scores, bought = healthy(1)
    scores_given(shop, monitored, now=DAY, scores=scores, bought=bought)
    # Not judged: a session still going (it can still buy), and another shop's score.
    live = Session.objects.create(
        shop=shop,
        person=Person.objects.first(),
        started_at=DAY - timedelta(minutes=20),
        ended_at=DAY - timedelta(minutes=1),
    )
    ScoreSample.objects.create(
        shop=shop, session=live, event_count=1, score=0.9, model_version=monitored,
        scored_at=DAY - timedelta(minutes=10),
    )  # fmt: skip
    other = ShopFactory()
    scores_given(other, ModelVersionFactory(shop=other), now=DAY, scores=[0.9], bought=[False])

    result = model_health_check(shop_id=shop.pk, now=DAY)

    row = ModelHealth.objects.get(shop=shop)
    reference = reference_from_card(card())
    assert result.status == row.status == ModelHealthStatus.HEALTHY
    assert (row.day, row.sample_count, row.session_count) == (DAY.date(), SESSIONS, SESSIONS)
    assert row.positive_count == bought.sum()
    assert row.roc_auc == pytest.approx(roc_auc_score(bought, scores), abs=5e-5)
    assert row.brier == pytest.approx(brier_score_loss(bought, scores), abs=5e-5)
    assert row.ece == calibration_report(labels=bought, scores=scores).ece
    assert row.psi == pytest.approx(
        psi(expected=reference.shares, actual=live_shares(scores, reference)), abs=5e-5
    )
    assert row.reference_auc == REFERENCE_AUC
    assert row.roc_auc > REFERENCE_AUC - 0.05
    assert row.ece < 0.05
    assert row.psi < 0.25
    assert row.problems == []
    assert row.drift["source"] == "score_distribution"
    assert sum(b["count"] for b in row.bins) == SESSIONS
    assert Anomaly.objects.count() == 0


def test_degraded_alerts_once_per_episode_and_resolves_when_healthy_again(
    shop, monitored, receiver, smtp_server, celery_eager, django_capture_on_commit_callbacks,
    caplog,
):  # fmt: skip
    webhook_rule(shop, receiver)
    alert_rule_create(
        shop=shop,
        data={"name": "Ops", "channel": "email", "emails": ["ops@example.com"], "kinds": ["model"]},
    )
    days = [DAY + timedelta(days=i) for i in range(4)]
    for now, (scores, bought) in zip(
        days, [healthy(1), degraded(2), degraded(3), healthy(4)], strict=True
    ):
        scores_given(shop, monitored, now=now, scores=scores, bought=bought)

    with django_capture_on_commit_callbacks(execute=True):
        first = model_health_check(shop_id=shop.pk, now=days[0])
    with django_capture_on_commit_callbacks(execute=True), caplog.at_level(logging.WARNING):
        second = model_health_check(shop_id=shop.pk, now=days[1])
    opened = {a.metric: a for a in Anomaly.objects.all()}
    sent_after_second = [json.loads(r["body"])["clickserver"] for r in receiver.requests]
    emails_after_second = len(smtp_server.messages)
    with django_capture_on_commit_callbacks(execute=True):
        third = model_health_check(shop_id=shop.pk, now=days[2])
    with django_capture_on_commit_callbacks(execute=True):
        fourth = model_health_check(shop_id=shop.pk, now=days[3])

    assert [first.status, second.status, third.status, fourth.status] == [
        "healthy", "degraded", "degraded", "healthy",
    ]  # fmt: skip
    assert (first.opened, third.opened, fourth.resolved) == ([], [], 3)
    assert sorted(opened) == ["model_ece", "model_roc_auc", "model_score_psi"]
    auc = opened["model_roc_auc"]
    assert (auc.kind, auc.subject, auc.direction) == ("model", "model:4", "drop")
    assert auc.window_start == days[1] - timedelta(days=1)
    assert auc.expected == pytest.approx(REFERENCE_AUC - 0.05)
    assert auc.observed < 0.6
    assert auc.explanation.startswith("The conversion model v4's ROC-AUC on the live scores")
    assert "below the test split's 0.780 minus the margin 0.05" in auc.explanation
    # Degraded → the two rules hear of each anomaly once, signed; the next day's check of the
    # same episode updates the rows and sends nothing.
    assert sorted(body["metric"] for body in sent_after_second) == sorted(opened)
    assert all(request["verified"] for request in receiver.requests)
    assert len(receiver.requests) == 3
    assert emails_after_second == len(smtp_server.messages) == 3
    assert AlertDelivery.objects.filter(status=DeliveryStatus.SENT).count() == 6
    after = {a.metric: a for a in Anomaly.objects.all()}
    assert Anomaly.objects.count() == 3
    assert {m: a.status for m, a in after.items()} == dict.fromkeys(opened, AnomalyStatus.RESOLVED)
    assert after["model_roc_auc"].window_start == auc.window_start
    assert after["model_roc_auc"].details["resolution"] == "the model's check passed again"
    assert ModelHealth.objects.filter(shop=shop).count() == 4
    assert any(
        r.levelno == logging.WARNING and "conversion model v4 of" in r.getMessage()
        and "model_roc_auc" in r.getMessage()
        for r in caplog.records
    )  # fmt: skip


def test_too_few_finished_sessions_are_stored_but_not_judged(shop, monitored):
    scores, bought = degraded(5)
    scores_given(shop, monitored, now=DAY, scores=scores[:150], bought=bought[:150])

    result = model_health_check(shop_id=shop.pk, now=DAY)

    row = ModelHealth.objects.get(shop=shop)
    assert (result.status, row.sample_count, row.problems) == ("insufficient", 150, [])
    assert row.roc_auc == pytest.approx(roc_auc_score(bought[:150], scores[:150]), abs=5e-5)
    assert Anomaly.objects.count() == 0


def test_an_old_card_is_compared_through_its_calibration_bins_and_the_auc_floor(shop):
    ModelMonitorSettings.objects.create(shop=shop, window_days=1)
    old_card = {
        "metrics": {"roc_auc": 0.9},
        "calibration": {"test": {"bins": [{"low": 0.0, "high": 0.1, "count": 10, "weight": 10}]}},
    }
    version = ModelVersionFactory(shop=shop, metrics=old_card, is_active=True)
    scores, bought = healthy(6)
    scores_given(shop, version, now=DAY, scores=scores, bought=bought)

    model_health_check(shop_id=shop.pk, now=DAY)

    row = ModelHealth.objects.get(shop=shop)
    live, _ = np.histogram(scores, bins=[-np.inf, *[i / 10 for i in range(1, 10)], np.inf])
    assert row.drift["source"] == "calibration_bins"
    assert row.drift["live"] == pytest.approx(live / SESSIONS, abs=1e-4)
    assert row.psi > 0.25
    assert row.reference_auc is None
    # Without a reference AUC only the floor applies; the AUC passes it, the drift does not.
    assert [p["metric"] for p in row.problems] == ["model_score_psi"]
    assert Anomaly.objects.get().metric == "model_score_psi"


def test_an_inactive_version_is_checked_but_raises_nothing(shop, monitored):
    old = ModelVersionFactory(shop=shop, version=3, metrics=card(), is_active=False)
    scores, bought = degraded(7)
    scores_given(shop, old, now=DAY, scores=scores, bought=bought)

    result = model_health_check(shop_id=shop.pk, now=DAY)

    assert result.status is None
    assert ModelHealth.objects.get(model_version=old).status == "degraded"
    assert Anomaly.objects.count() == 0


def test_the_beat_task_fans_out_to_every_active_shop(shop, monitored, celery_eager):
    ModelMonitorSettings.objects.filter(shop=shop).update(window_days=7)
    now = datetime.now(UTC)
    scores, bought = healthy(8)
    scores_given(shop, monitored, now=now, scores=scores, bought=bought)
    idle = ShopFactory(is_active=False)

    model_health_check_task.delay()

    assert list(ModelHealth.objects.values_list("shop_id", "status")) == [(shop.pk, "healthy")]
    assert not ModelHealth.objects.filter(shop=idle).exists()
    assert ModelVersion.objects.get(pk=monitored.pk).is_active
