from datetime import UTC, datetime, timedelta

import factory

from events.models import Order, Session
from events.tests.factories import PersonFactory, ShopFactory
from segments.models import Segment

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class SessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Session

    person = factory.SubFactory(PersonFactory)
    shop = factory.SelfAttribute("person.shop")
    started_at = T0
    ended_at = factory.LazyAttribute(lambda o: o.started_at + timedelta(minutes=10))


class OrderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Order

    person = factory.SubFactory(PersonFactory)
    shop = factory.SelfAttribute("person.shop")
    order_id = factory.Sequence(lambda n: f"order-{n}")
    placed_at = T0
    total = 100


class SegmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Segment

    shop = factory.SubFactory(ShopFactory)
    name = factory.Sequence(lambda n: f"Segment {n}")
    kind = Segment.Kind.RULE
    rules = factory.LazyFunction(
        lambda: {"all": [{"event": "purchase", "min_count": 1, "within_days": 30}]}
    )
