from datetime import UTC, datetime

import factory

from events.models import Product
from events.tests.factories import ShopFactory
from recommendations.models import ProductAffinity

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product

    shop = factory.SubFactory(ShopFactory)
    product_id = factory.Sequence(lambda n: f"p{n}")
    title = factory.LazyAttribute(lambda o: f"Product {o.product_id}")
    updated_at = T0


class ProductAffinityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProductAffinity

    shop = factory.SubFactory(ShopFactory)
    score = 0.5
    session_count = 1
    updated_at = T0
