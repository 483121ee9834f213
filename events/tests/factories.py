from datetime import UTC, datetime

import factory
from django.contrib.auth import get_user_model

from events.models import Event, Person, PersonIdentifier, Shop, ShopMembership
from events.validation import EventIn


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery")


class ShopFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Shop
        skip_postgeneration_save = True

    domain = factory.Sequence(lambda n: f"shop{n}.example.com")
    name = factory.Sequence(lambda n: f"Shop {n}")
    webhook_secret = "test-webhook-secret"

    @factory.post_generation
    def owner(self, create, extracted, **kwargs):
        if create and extracted is not None:
            ShopMembership.objects.create(shop=self, user=extracted, role="owner")


class EventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Event

    shop = factory.SubFactory(ShopFactory)
    event_id = factory.Sequence(lambda n: f"evt-{n}")
    type = "page_view"
    anonymous_id = "anon-1"
    occurred_at = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    received_at = factory.LazyAttribute(lambda o: o.occurred_at)


def event_in(
    event_id: str,
    occurred_at: datetime,
    *,
    anonymous_id: str = "anon-1",
    user_id: str = "",
    type: str = "page_view",
    **fields,
) -> EventIn:
    """An already validated event, for the fast insert path the pipeline reads from."""
    return EventIn(
        event_id=event_id,
        type=type,
        occurred_at=occurred_at,
        anonymous_id=anonymous_id,
        user_id=user_id,
        **fields,
    )


T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class PersonFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Person

    shop = factory.SubFactory(ShopFactory)
    first_seen_at = T0
    last_seen_at = T0


class PersonIdentifierFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PersonIdentifier

    person = factory.SubFactory(PersonFactory)
    shop = factory.SelfAttribute("person.shop")
    kind = "anonymous_id"
    value = factory.Sequence(lambda n: f"anon-{n}")
