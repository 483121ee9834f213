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
from schemathesis.specs.openapi.checks import positive_data_acceptance

from analytics.services.rollups import rollups_rebuild
from clickserver.wsgi import application
from events.models import PipelineWatermark
from events.services.ingest import events_ingest
from events.services.pipeline import events_process
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


# Operations whose parameters are bound to each other (or to today) by a rule that JSON Schema
# cannot state for query parameters or a body of optional fields: a request that satisfies every
# parameter's own schema may still be a correct 400, so `positive_data_acceptance` (ST202) is not
# run for these. Each rule is in its parameters' descriptions; every other check still runs.
PERIOD_RULE = (
    "start/end: days from 2000-01-01 to today + 366, start not after end (today when absent), "
    "at most 1098 days apart"
)
PERSON_RULE = "anonymous_id or user_id: at least one not blank"
EXPERIMENT_RULE = (
    "variants: distinct slug keys, exactly one control; key: a slug no live experiment uses; "
    "metrics and targeting as docs/experiments.md"
)
ALERT_RULE = (
    "emails with channel email, webhook_url with channel webhook (at a public address); "
    "threshold_direction and threshold_value only with threshold_metric"
)
CAMPAIGN_RULE = (
    "trigger, targeting, content and caps as docs/campaigns.md: a score band within [0, 1] with "
    "low < high, known segments and placeholders, caps >= 1, holdout_share in (0, 1), quiet "
    "hours 0-23 given together, at least one content variant, webhook_url at a public address"
)
CROSS_PARAMETER_RULES = {
    **{
        f"GET /analytics/{name}/": PERIOD_RULE
        for name in (
            "abandoned_carts",
            "audience",
            "geography",
            "insights",
            "kpis",
            "product_visits",
            "products",
            "retention",
            "session_count",
            "trends",
            "user_count",
            "visit_conversion",
        )
    },
    "GET /analytics/funnel/": f"{PERIOD_RULE}; breakdown only with unit=session",
    "GET /analytics/reports/preview/": "day: from the shop's first event to today (shop-local)",
    "GET /segments/identified-users-sessions": PERIOD_RULE,
    "GET /api/featured_collection/": PERSON_RULE,
    "GET /api/pick_up_where_you_left_off/": PERSON_RULE,
    "POST /events/erasures/": "exactly one of user_id, anonymous_id, email",
    "POST /segments/": "rules: min_count <= max_count; name: unique among the shop's segments",
    "GET /experiments/decide/": "anonymous_id, user_id or session_id: at least one not blank",
    "POST /experiments/": EXPERIMENT_RULE,
    "PATCH /experiments/{experiment_id}/": EXPERIMENT_RULE,
    "GET /analytics/anomalies/": "since before until",
    "POST /analytics/alert_rules/": ALERT_RULE,
    "PATCH /analytics/alert_rules/{rule_id}/": ALERT_RULE,
    "POST /notifications/campaigns/": CAMPAIGN_RULE,
    "PATCH /notifications/campaigns/{campaign_id}/": CAMPAIGN_RULE,
}


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
        events_ingest(shop=shop, events=events, received_at=NOW)
        events_process(shop_id=shop.pk, now=NOW + timedelta(days=1), batch_size=1000)
        rollups_rebuild(shop_id=shop.pk, now=NOW)
        token = Token.objects.create(user=owner)
    yield {"Authorization": f"Token {token.key}", "X-Write-Key": shop.write_key}
    with django_db_blocker.unblock():
        PipelineWatermark.objects.filter(shop=shop).delete()
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

    excluded = [positive_data_acceptance] if case.operation.label in CROSS_PARAMETER_RULES else []
    _with_shop(case).call_and_validate(headers=credentials, excluded_checks=excluded)


def test_every_cross_parameter_exclusion_names_an_operation_of_the_schema():
    # A renamed or removed operation would otherwise leave its exclusion behind unnoticed.
    labels = {result.ok().label for result in schema.get_all_operations()}

    assert set(CROSS_PARAMETER_RULES) - labels == set()
