"""The Reports page in real headless Chromium: the archive, a report's findings, SVG charts and
text, shop-supplied names shown as text (never markup), under the dashboard's CSP."""

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from analytics.periods import Period
from analytics.services.reports import report_generate
from analytics.services.rollups import rollups_rebuild
from analytics.tests.test_dashboard_browser import (
    CSP_WATCH,
    VIEWPORTS,
    log_in,
    screenshot,
    user_with_password,
    watch,  # noqa: F401 (a fixture)
)
from events.models import Order, OrderLine
from events.tests.factories import EventFactory, ShopFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)
HOSTILE = '<img src=x onerror="document.title=1">'


@pytest.fixture
def shop_with_reports(db):
    owner = user_with_password("reader", is_staff=False)
    shop = ShopFactory(owner=owner, domain="reports.example.com", timezone="Europe/London",
                       currency="GBP", name="Reports Shop")  # fmt: skip
    EventFactory(shop=shop, occurred_at=datetime(2026, 3, 2, 9, tzinfo=UTC))
    for i, day in enumerate((2, 3, 3, 4)):
        order = Order.objects.create(
            shop=shop, order_id=f"o{i}", user_id=f"u{i % 2}",
            placed_at=datetime(2026, 3, day, 10 + i, tzinfo=UTC), total=Decimal("12.50"),
        )  # fmt: skip
        OrderLine.objects.create(order=order, product_id="P1", name=HOSTILE, quantity=1,
                                 unit_price=Decimal("12.50"))  # fmt: skip
    rollups_rebuild(shop_id=shop.pk, now=NOW)
    london = ZoneInfo("Europe/London")
    for day in (date(2026, 3, 3), date(2026, 3, 4)):
        report_generate(shop=shop, kind="daily", period=Period(day, day, london), now=NOW)
    week = Period(date(2026, 3, 2), date(2026, 3, 8), london)
    report_generate(shop=shop, kind="weekly", period=week, now=NOW)
    return shop


def test_reports_page_shows_the_archive_and_a_report_as_text(
    browser,
    live_server,
    shop_with_reports,
    watch,  # noqa: F811 (the fixture imported above)
    settings,
):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    seen = {}
    for viewport, size in VIEWPORTS.items():
        context = browser.new_context(viewport=size)
        context.add_init_script(CSP_WATCH)
        page = watch(context.new_page())
        log_in(page, live_server.url, "reader", path=f"/reports/?shop={shop_with_reports.domain}")
        page.wait_for_function(
            "() => document.getElementById('report-text').textContent.includes('Daily report')"
        )
        page.wait_for_function(
            "() => [...document.querySelectorAll('#report-charts img')]"
            ".every((img) => img.complete && img.naturalWidth > 0)"
        )
        seen[viewport] = {
            "rows": page.locator("#reports-table tbody tr[data-id]").all_inner_texts(),
            "findings": page.locator("#report-findings li").count(),
            "charts": page.locator("#report-charts img").count(),
            "text": page.inner_text("#report-text"),
            "hostile_elements": page.locator("img[src='x']").count(),
            "title": page.title(),
        }
        screenshot(page, f"reports-archive-{viewport}")
        page.select_option("#report-kind", "weekly")
        page.wait_for_function(
            "() => document.querySelectorAll('#reports-table tbody tr[data-id]').length === 1"
        )
        page.wait_for_function(
            "() => document.getElementById('report-text').textContent.includes('Weekly report')"
        )
        seen[viewport]["weekly_title"] = page.inner_text("#report-title")
        context.close()

    for viewport in VIEWPORTS:
        got = seen[viewport]
        assert [row.split("\t")[:2] for row in got["rows"]] == [
            ["2026-03-04", "Daily"], ["2026-03-03", "Daily"], ["2026-03-02 – 2026-03-08", "Weekly"],
        ]  # fmt: skip
        assert (got["findings"], got["charts"]) == (3, 2)
        assert got["text"].startswith("Daily report for Reports Shop: 2026-03-04 (Europe/London)")
        assert HOSTILE in got["text"]
        assert got["hostile_elements"] == 0
        assert got["title"].startswith("Reports")
        assert got["weekly_title"] == "Weekly report: 2026-03-02 – 2026-03-08"
    assert watch.problems == []
