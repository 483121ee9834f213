from datetime import UTC, datetime

import factory

from events.models import Event, Order, Refund, Session
from events.tests.factories import PersonFactory, ShopFactory

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class SessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Session

    shop = factory.SelfAttribute("person.shop")
    person = factory.SubFactory(PersonFactory)
    started_at = T0
    ended_at = factory.LazyAttribute(lambda o: o.started_at)


class SessionEventFactory(factory.django.DjangoModelFactory):
    """An event already assigned to its session and person, as the pipeline leaves it."""

    class Meta:
        model = Event

    session = factory.SubFactory(SessionFactory)
    shop = factory.SelfAttribute("session.shop")
    person = factory.SelfAttribute("session.person")
    event_id = factory.Sequence(lambda n: f"a-evt-{n}")
    type = "page_view"
    occurred_at = factory.SelfAttribute("session.started_at")
    received_at = factory.LazyAttribute(lambda o: o.occurred_at)


class OrderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Order

    shop = factory.SubFactory(ShopFactory)
    order_id = factory.Sequence(lambda n: f"o-{n}")
    placed_at = T0
    total = 100


class RefundFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Refund

    shop = factory.SubFactory(ShopFactory)
    refund_id = factory.Sequence(lambda n: f"r-{n}")
    amount = 10
    refunded_at = T0
