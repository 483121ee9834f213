"""Schemathesis against the in-repo OpenAPI schema at /api/schema/, with valid credentials.

The schema is loaded from the running application (`clickserver.wsgi.application`, the object
gunicorn serves, ingestion fast path included) and every operation is called in process through
WSGI, inside the test's transaction, so the shop below (an owner's API token, a write key, and
processed events with their sessions and rollups) is what the generated requests read and write.
`MAX_EXAMPLES` bounds the cases per operation; both tests print how many cases they ran.
"""

import contextlib
import io
from datetime import UTC, datetime, timedelta

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error

from analytics.services import rollups_rebuild
from clickserver.wsgi import application
from events import services
from events.models import PipelineWatermark
from events.tests.factories import ShopFactory, UserFactory

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db]

MAX_EXAMPLES = 10
NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    # No shrinking: CI reports the first failing case as found, within the time budget.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
SHOP = "fuzz.example"


def _with_shop(case):
    """Name the fuzzed shop where the schema leaves `shop` out, so reads reach its data."""
    if case.method.upper() == "GET":
        case.query = {"shop": SHOP, **(case.query or {})}
    return case


@pytest.fixture(autouse=True)
def _keep_test_connection():
    # As Django's test client does: closing "old" connections at the end of a request would
    # close the test's connection inside its transaction (and mark that for rollback).
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture(scope="module")
def fuzz_shop(django_db_setup, django_db_blocker):
    """An owner, a token and a shop with processed events, sessions and rollups.

    Committed once for the module (building it costs a second; each operation is a test) and
    removed at the end; every case runs in its test's transaction, rolled back after it.
    """
    with django_db_blocker.unblock():
        owner = UserFactory()
        shop = ShopFactory(owner=owner, domain=SHOP)
        events = [
            {
                "event_id": f"fuzz-{n}",
                "type": ("page_view", "product_view", "add_to_cart", "purchase")[n % 4],
                "anonymous_id": f"visitor-{n % 5}",
                "timestamp": (NOW - timedelta(minutes=7 * n)).isoformat(),
                "url": f"https://fuzz.example/products/p{n % 3}?utm_source=news",
                "product": {"id": f"p{n % 3}", "price": "10.00"},
                "order": {"id": f"o{n}", "revenue": "10.00"} if n % 4 == 3 else None,
            }
            for n in range(40)
        ]
        services.events_ingest(shop=shop, events=events, received_at=NOW)
        services.events_process(shop_id=shop.pk, now=NOW + timedelta(days=1), batch_size=1000)
        rollups_rebuild(shop_id=shop.pk, now=NOW)
        token = Token.objects.create(user=owner)
    yield {"Authorization": f"Token {token.key}", "X-Write-Key": shop.write_key}
    with django_db_blocker.unblock():
        PipelineWatermark.objects.filter(name__endswith=f":{shop.pk}").delete()
        shop.delete()
        owner.delete()


@pytest.fixture
def credentials(db, fuzz_shop) -> dict[str, str]:
    return fuzz_shop


# drf-spectacular prints its generation warnings while the schema is served; loading happens at
# collection, where they would interleave with every test run's output (`manage.py spectacular
# --validate` shows them).
with contextlib.redirect_stderr(io.StringIO()):
    schema = schemathesis.openapi.from_wsgi("/api/schema/", application)


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_answers_no_server_error(case, credentials, fuzz_cases):
    fuzz_cases["schemathesis: not_a_server_error"] += 1

    _with_shop(case).call_and_validate(headers=credentials, checks=[not_a_server_error])


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_conforms_to_its_schema(case, credentials, fuzz_cases):
    fuzz_cases["schemathesis: all checks"] += 1

    _with_shop(case).call_and_validate(headers=credentials)
