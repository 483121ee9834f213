"""The Audience page in real headless Chromium, against a live server and MariaDB: both tables
show the API's rows (age bands from identify traits, new and returning), under the CSP."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from analytics.tests.factories import OrderFactory, SessionFactory
from analytics.tests.test_dashboard_browser import (
    CSP_WATCH,
    VIEWPORTS,
    log_in,
    screenshot,
    user_with_password,
)
from events.models import ShopMembership
from events.tests.factories import PersonFactory, ShopFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TABLES = {"age_band": "audience-age-table", "visitor_type": "audience-visitor-table"}


@pytest.fixture
def audience_shop(db):
    owner = user_with_password("owner")
    shop = ShopFactory(domain="audience.example.com", currency="EUR")
    ShopMembership.objects.create(shop=shop, user=owner, role="owner")
    now = timezone.now()
    yesterday = now - timedelta(days=1)
    people = [
        ({"age": 22}, now - timedelta(days=400)),
        ({"age": "31"}, yesterday - timedelta(hours=1)),
        ({"birth_date": "1970-06-15"}, now - timedelta(days=60)),
        ({}, yesterday - timedelta(hours=2)),
    ]
    for index, (traits, first_seen) in enumerate(people):
        person = PersonFactory(shop=shop, traits=traits, first_seen_at=first_seen)
        for visit in range(index + 1):
            SessionFactory(
                shop=shop,
                person=person,
                started_at=yesterday + timedelta(minutes=visit),
                is_converted=visit == 0,
            )
        OrderFactory(shop=shop, person=person, placed_at=yesterday, total=Decimal(20 + index))
    return shop, owner


def _rows(page, table: str) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"#{table} tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )


def test_audience_page_shows_the_api_rows(browser, live_server, audience_shop, settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    shop, owner = audience_shop
    client = APIClient()
    client.force_authenticate(owner)
    answers = {
        breakdown: client.get(
            f"/analytics/audience/?shop={shop.domain}&breakdown={breakdown}"
        ).json()["rows"]
        for breakdown in TABLES
    }
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    context.add_init_script(CSP_WATCH)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    log_in(page, live_server.url, "owner")

    page.goto(f"{live_server.url}/audience/?shop={shop.domain}")
    page.wait_for_function("() => !document.body.innerText.includes('Loading…')")
    shown = {breakdown: _rows(page, table) for breakdown, table in TABLES.items()}
    screenshot(page, "audience-desktop")
    context.close()

    assert [r[0] for r in shown["age_band"]] == [r["value"] for r in answers["age_band"]]
    assert [r[0] for r in shown["age_band"]] == [
        "18-25", "26-35", "36-45", "46-55", "56-65", "66+", "none"
    ]  # fmt: skip
    by_band = {r[0]: r for r in shown["age_band"]}
    # Sessions and visitors: one person per band, with 1, 2, 3 and 4 sessions.
    assert by_band["18-25"][1:3] == ["1", "1"]
    assert by_band["26-35"][1:3] == ["2", "1"]
    assert by_band["56-65"][1:3] == ["3", "1"]  # born 1970-06-15: 56 until mid-2036
    assert by_band["none"][1:3] == ["4", "1"]
    assert [r[1] for r in shown["age_band"]] == [str(r["sessions"]) for r in answers["age_band"]]
    assert [r[4] for r in shown["age_band"]] == [str(r["orders"]) for r in answers["age_band"]]
    assert "21.00" in by_band["26-35"][5]
    assert "23.00" in by_band["none"][6]
    assert [r[0] for r in shown["visitor_type"]] == ["new", "returning", "none"]
    assert [r[1] for r in shown["visitor_type"]] == ["6", "4", "0"]
    assert problems == []
