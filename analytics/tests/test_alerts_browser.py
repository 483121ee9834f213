"""The Alerts page in real headless Chromium: open anomalies with their chart and band, the
navigation badge, acknowledge and resolve, shop/shopper text shown as text (never markup)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from analytics.models import Anomaly, AnomalyStatus
from analytics.periods import hour_floor
from analytics.services.alerts import alert_rule_create
from analytics.services.detection import anomalies_detect
from analytics.tests.rollup_history import hour_set, rollup_history_write
from analytics.tests.test_dashboard_browser import (
    CSP_WATCH,
    VIEWPORTS,
    log_in,
    screenshot,
    user_with_password,
    watch,  # noqa: F401 (a fixture)
)
from events.tests.factories import ShopFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
HOSTILE = '<img src=x onerror="window.__pwned = 1">'


def test_alerts_page_charts_badge_acknowledge_and_resolve(browser, live_server, watch, settings):  # noqa: F811
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    owner = user_with_password("owner")
    shop = ShopFactory(owner=owner, domain="tea.example.com", name="Tea Shop")
    now = timezone.now()
    rollup_history_write(shop, end=hour_floor(now))
    hour_set(shop, hour_floor(now) - timedelta(hours=1), session_count=90, pageview_count=30)
    anomalies_detect(shop_id=shop.pk, now=now)
    spike = Anomaly.objects.get(shop=shop, metric="sessions_hourly")
    Anomaly.objects.create(
        shop=shop, kind="order", metric="order_value", subject=HOSTILE,
        window_start=now - timedelta(minutes=30), window_end=now - timedelta(minutes=30),
        observed=9850, severity="critical", detector="order_value",
        explanation=f"Order {HOSTILE} was $9,850.00.", opened_at=now, updated_at=now,
    )  # fmt: skip
    alert_rule_create(
        shop=shop, data={"name": "Ops", "channel": "email", "emails": ["ops@example.com"]}
    )
    open_count = Anomaly.objects.filter(
        shop=shop, status="open", severity__in=("warning", "critical")
    ).count()

    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    context.add_init_script(CSP_WATCH)
    page = watch(context.new_page())
    log_in(page, live_server.url, "owner", path=f"/alerts/?shop={shop.domain}")
    page.wait_for_selector(f".anomaly[data-id='{spike.pk}']")
    assert page.inner_text("#alerts-badge") == str(open_count)
    canvas = f"anomaly-chart-{spike.pk}"
    page.wait_for_function(
        "(id) => Chart.getChart(document.getElementById(id))", arg=canvas, timeout=15000
    )
    chart = page.evaluate(
        """(id) => { const c = Chart.getChart(document.getElementById(id));
           return c.data.datasets.map((d) => ({label: d.label, n: d.data.filter(
             (v) => v !== null).length})); }""",
        canvas,
    )
    assert [d["label"] for d in chart] == ["Normal band (low)", "Normal band", "Usual", "Observed"]
    assert all(d["n"] >= 48 for d in chart)
    # The hostile order id is text on the page, not an element.
    hostile = page.inner_text(".anomaly:has-text('9,850')")
    assert HOSTILE in hostile
    assert page.evaluate("() => document.querySelectorAll('.anomaly img').length") == 0
    assert page.evaluate("() => window.__pwned") is None
    assert "Ops" in page.inner_text("#rules-table")
    page.wait_for_selector("#history-table tbody tr:nth-child(2)")
    screenshot(page, "alerts-desktop")

    card = f".anomaly[data-id='{spike.pk}']"
    page.click(f"{card} [data-action=acknowledge]")
    page.wait_for_selector(f"{card} .tag.acknowledged")
    spike.refresh_from_db()
    assert spike.status == AnomalyStatus.ACKNOWLEDGED
    assert spike.acknowledged_by == owner
    assert page.inner_text("#alerts-badge") == str(open_count - 1)
    page.click(f"{card} [data-action=resolve]")
    page.wait_for_selector(card, state="detached")
    spike.refresh_from_db()
    assert spike.status == AnomalyStatus.RESOLVED
    context.close()
    assert watch.problems == []
