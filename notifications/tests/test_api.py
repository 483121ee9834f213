from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from notifications.tests.factories import (
    ConversionScoreFactory,
    ModelVersionFactory,
    SessionFactory,
)


@pytest.mark.django_db
def test_scores_need_authentication(shop):
    response = APIClient().get("/notifications/scores/", {"shop": shop.domain})

    assert response.status_code == 401


@pytest.mark.django_db
def test_scores_of_another_shop_are_not_found(api_client, shop, other_shop):
    ConversionScoreFactory(session=SessionFactory(shop=other_shop))

    response = api_client.get("/notifications/scores/live/", {"shop": other_shop.domain})

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.django_db
def test_scores_of_one_session(api_client, shop, django_assert_num_queries):
    model_version = ModelVersionFactory(shop=shop, version=3)
    score = ConversionScoreFactory(session=SessionFactory(shop=shop), model_version=model_version)
    ConversionScoreFactory(session=SessionFactory(shop=shop))

    with django_assert_num_queries(3):
        response = api_client.get(
            "/notifications/scores/", {"shop": shop.domain, "session": score.session_id}
        )

    assert response.status_code == 200
    assert response.json()["results"] == [
        {
            "session": score.session_id,
            "person": score.person_id,
            "score": 0.25,
            "model_version": 3,
            "scored_at": "2026-01-05T12:00:00Z",
        }
    ]


@pytest.mark.django_db
def test_live_scores_are_the_recent_sessions_best_first_and_buyers_are_no_prospects(
    api_client, shop, django_assert_num_queries
):
    now = timezone.now()
    recent = SessionFactory(shop=shop, started_at=now - timedelta(minutes=9), ended_at=now)
    hot = SessionFactory(shop=shop, started_at=now - timedelta(minutes=9), ended_at=now)
    bought = SessionFactory(
        shop=shop, started_at=now - timedelta(minutes=9), ended_at=now, is_converted=True
    )
    old = SessionFactory(
        shop=shop, started_at=now - timedelta(hours=3), ended_at=now - timedelta(hours=2)
    )
    ConversionScoreFactory(session=recent, score=0.1, scored_at=now)
    ConversionScoreFactory(session=hot, score=0.9, scored_at=now)
    ConversionScoreFactory(session=bought, score=0.97, scored_at=now)
    ConversionScoreFactory(session=old, score=0.99, scored_at=now - timedelta(hours=2))

    with django_assert_num_queries(3):
        response = api_client.get("/notifications/scores/live/", {"shop": shop.domain})

    assert response.status_code == 200
    assert [(r["session"], r["status"], r["score"]) for r in response.json()["results"]] == [
        (hot.id, "prospect", 0.9),
        (recent.id, "prospect", 0.1),
        (bought.id, "bought", None),
    ]


@pytest.mark.django_db
def test_a_session_that_bought_without_a_score_is_listed_as_bought(api_client, shop):
    now = timezone.now()
    bought = SessionFactory(
        shop=shop, started_at=now - timedelta(minutes=2), ended_at=now, is_converted=True
    )

    response = api_client.get("/notifications/scores/live/", {"shop": shop.domain})

    assert response.json()["results"] == [
        {
            "session": bought.id,
            "person": bought.person_id,
            "status": "bought",
            "score": None,
            "model_version": None,
            "scored_at": None,
        }
    ]
