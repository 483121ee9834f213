"""GET /notifications/model/health/: token or session auth, shop-scoped, `days` bounded."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from notifications.models import ModelHealth, ModelMonitorSettings
from notifications.tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db

CARD = {
    "metrics": {"roc_auc": 0.81, "pr_auc": 0.3, "roc_auc_at": {"3": 0.7, "5": 0.72, "10": None}},
    "calibration": {"target_ece": 0.03, "test": {"brier": 0.08, "ece": 0.012}},
    "monitoring": {"test_prefix_roc_auc": 0.78},
    "sizes": {"train": 700, "validation": 150, "test": 150, "train_prefixes": 2100},
    "class_balance": {"train": 0.1, "validation": 0.09, "test": 0.11},
    "data_window": {"train_from": "2026-01-01T00:00:00Z"},
    "promotion": {"is_activated": True, "reason": "no version was active"},
}


def health(shop, version, *, day, **fields):
    now = timezone.now()
    return ModelHealth.objects.create(
        shop=shop,
        model_version=version,
        day=day,
        window_start=now - timedelta(days=7),
        window_end=now,
        sample_count=300,
        session_count=250,
        positive_count=30,
        roc_auc=0.74,
        ece=0.02,
        psi=0.05,
        checked_at=now,
        **{"status": "healthy", **fields},
    )


def test_the_active_card_thresholds_and_history_oldest_first(api_client, shop):
    ModelMonitorSettings.objects.create(shop=shop, psi_max=0.3)
    old = ModelVersionFactory(shop=shop, version=7, metrics={})
    active = ModelVersionFactory(shop=shop, version=8, metrics=CARD, is_active=True)
    today = timezone.now().date()
    health(shop, active, day=today, status="degraded", problems=[{"metric": "model_ece"}])
    health(shop, old, day=today - timedelta(days=1))
    health(shop, old, day=today - timedelta(days=40))  # outside the default 30 days

    response = api_client.get("/notifications/model/health/", {"shop": shop.domain})

    body = response.json()
    assert response.status_code == 200
    assert body["active_model"]["version"] == 8
    assert body["active_model"]["card"] == {
        "test_roc_auc": 0.81,
        "test_pr_auc": 0.3,
        "test_roc_auc_at": {"3": 0.7, "5": 0.72, "10": None},
        "test_prefix_roc_auc": 0.78,
        "test_brier": 0.08,
        "test_ece": 0.012,
        "target_ece": 0.03,
        "sizes": CARD["sizes"],
        "class_balance": CARD["class_balance"],
        "data_window": CARD["data_window"],
        "promotion": CARD["promotion"],
    }
    assert [(v["version"], v["is_active"]) for v in body["versions"]] == [(8, True), (7, False)]
    assert body["thresholds"] == {
        "window_days": 7, "min_samples": 200, "min_per_class": 10, "auc_floor": 0.6,
        "auc_margin": 0.05, "ece_max": 0.05, "psi_max": 0.3,
    }  # fmt: skip
    rows = [
        (r["day"], r["model_version"], r["status"], r["is_active_version"]) for r in body["history"]
    ]
    assert rows == [
        ((today - timedelta(days=1)).isoformat(), 7, "healthy", False),
        (today.isoformat(), 8, "degraded", True),
    ]  # fmt: skip
    assert body["history"][1]["problems"] == [{"metric": "model_ece"}]


def test_a_shop_without_a_model_answers_empty(api_client, shop):
    response = api_client.get("/notifications/model/health/", {"shop": shop.domain, "days": 1})

    assert response.status_code == 200
    assert (response.json()["active_model"], response.json()["history"]) == (None, [])


def test_token_auth_works_and_anonymous_is_401(shop, user):
    token = Token.objects.create(user=user)
    client = APIClient()

    anonymous = client.get("/notifications/model/health/", {"shop": shop.domain})
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    signed = client.get("/notifications/model/health/", {"shop": shop.domain})

    assert anonymous.status_code == 401
    assert signed.status_code == 200


def test_another_shops_health_is_not_found(api_client, shop, other_shop):
    version = ModelVersionFactory(shop=other_shop, metrics=CARD, is_active=True)
    health(other_shop, version, day=timezone.now().date())

    response = api_client.get("/notifications/model/health/", {"shop": other_shop.domain})
    own = api_client.get("/notifications/model/health/", {"shop": shop.domain})

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert own.json()["history"] == []


@pytest.mark.parametrize("days", ["0", "366", "-1", "x", "1.5"])
def test_days_out_of_range_is_a_400_naming_it(api_client, shop, days):
    response = api_client.get("/notifications/model/health/", {"shop": shop.domain, "days": days})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert list(response.json()["fields"]) == ["days"]
