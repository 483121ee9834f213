from datetime import UTC, datetime, timedelta

import factory

from events.models import Session
from events.tests.factories import PersonFactory, ShopFactory
from notifications.models import ConversionScore, ModelVersion

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class SessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Session

    shop = factory.SubFactory(ShopFactory)
    person = factory.SubFactory(PersonFactory, shop=factory.SelfAttribute("..shop"))
    started_at = T0
    ended_at = factory.LazyAttribute(lambda o: o.started_at + timedelta(minutes=5))


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion

    version = factory.Sequence(lambda n: n + 1)
    path = "/nonexistent"
    trained_at = T0


class ConversionScoreFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ConversionScore

    session = factory.SubFactory(SessionFactory)
    shop = factory.SelfAttribute("session.shop")
    person = factory.SelfAttribute("session.person")
    score = 0.25
    scored_at = T0
