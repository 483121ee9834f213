from datetime import UTC, datetime, timedelta

import pytest

from events.models import Session
from events.tests.factories import EventFactory, PersonFactory
from recommendations.evaluation import recommendations_evaluate

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)


def _session(person, day: int, products: list[str]) -> None:
    start = DAY0 + timedelta(days=day)
    session = Session.objects.create(
        shop=person.shop, person=person, started_at=start, ended_at=start
    )
    for i, product_id in enumerate(products):
        EventFactory(
            shop=person.shop,
            person=person,
            session=session,
            type="product_view",
            product_id=product_id,
            occurred_at=start + timedelta(minutes=i),
        )


@pytest.mark.django_db
def test_evaluation_hides_the_last_product_of_late_sessions(shop):
    trainer, shopper = PersonFactory.create_batch(2, shop=shop)
    for day in (0, 1, 2):
        _session(trainer, day, ["A", "B"])
    _session(trainer, 3, ["C"] * 5)
    _session(shopper, 10, ["A", "B"])

    result = recommendations_evaluate(shop_id=shop.pk, k=10).as_dict()

    assert result["train_events"] == 11
    assert result["test_sessions"] == 1
    assert result["featured_collection"] == {"hit_rate@10": 1.0, "mrr@10": 1.0}
    assert result["crowd_favorites"] == {"hit_rate@10": 1.0, "mrr@10": 0.3333}
