"""The Model page in real headless Chromium, against a live server and MariaDB: three daily
checks run by the monitoring service over synthetic live scores (healthy, degraded, healthy),
then the page draws the card, the figures against their thresholds, the history and the
charts from `GET /notifications/model/health/`."""

from datetime import timedelta

import pytest
from django.utils import timezone

from analytics.tests.test_dashboard_browser import (
    CSP_WATCH,
    VIEWPORTS,
    log_in,
    screenshot,
    user_with_password,
)
from events.tests.factories import ShopFactory
from notifications.models import ModelHealth, ModelMonitorSettings
from notifications.monitor.services import model_health_check
from notifications.tests.factories import ModelVersionFactory
from notifications.tests.test_experiments_dashboard_browser import PAINTED
from notifications.tests.test_monitor_check import card, degraded, healthy, scores_given

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def monitored_shop():
    owner = user_with_password("owner")
    shop = ShopFactory(owner=owner, domain="tea.example.com", name="Tea Shop")
    ModelMonitorSettings.objects.create(shop=shop, window_days=1)
    ModelVersionFactory(
        shop=shop, version=3, metrics={"promotion": {"reason": "first"}}, is_active=False
    )
    version = ModelVersionFactory(
        shop=shop,
        version=4,
        is_active=True,
        metrics={
            **card(),
            "calibration": {"target_ece": 0.03, "test": {"brier": 0.0812, "ece": 0.0123}},
            "sizes": {"train": 700, "validation": 150, "test": 150},
            "class_balance": {"test": 0.11},
            "promotion": {"is_activated": True, "reason": HOSTILE},
        },
    )
    now = timezone.now()
    days = [now - timedelta(days=2), now - timedelta(days=1), now]
    for at, (scores, bought) in zip(days, [healthy(1), degraded(2), healthy(3)], strict=True):
        scores_given(shop, version, now=at, scores=scores, bought=bought)
        model_health_check(shop_id=shop.pk, now=at)
    return shop, list(ModelHealth.objects.filter(shop=shop).order_by("day"))


def test_the_model_page_shows_the_card_checks_thresholds_and_charts(
    browser, live_server, monitored_shop, settings
):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    shop, checks = monitored_shop
    problems: list[str] = []
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    context.add_init_script(CSP_WATCH)
    page = context.new_page()
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("dialog", lambda d: problems.append(f"dialog: {d.message}"))
    page.on(
        "response", lambda r: problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None
    )

    log_in(page, live_server.url, "owner", path=f"/?shop={shop.domain}")
    page.click("nav a:has-text('Model')")
    page.wait_for_selector("#history-table tbody tr[data-status]")
    for chart in ("auc-chart", "drift-chart", "calibration-chart"):
        page.wait_for_function("(id) => Chart.getChart(document.getElementById(id))", arg=chart)
    figures = page.eval_on_selector_all(
        "#model-kpis .kpi",
        "boxes => boxes.map(b => [b.dataset.figure, b.querySelector('.kpi-value').textContent,"
        " b.querySelector('.kpi-sub').textContent])",
    )
    status = page.inner_text("#model-status")
    card_rows = dict(
        page.eval_on_selector_all(
            "#card-table tr",
            "rows => rows.map(r => [r.cells[0].textContent, r.cells[1].textContent])",
        )
    )
    history = page.eval_on_selector_all(
        "#history-table tbody tr",
        "rows => rows.map(r => [r.dataset.status, r.cells[1].textContent, r.cells[3].textContent])",
    )
    versions = page.eval_on_selector_all(
        "#versions-table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    datasets = page.evaluate(
        "() => Chart.getChart(document.getElementById('auc-chart')).data.datasets.map("
        "d => [d.label, d.data])"
    )
    painted = [
        page.evaluate(PAINTED, chart) for chart in ("auc-chart", "drift-chart", "calibration-chart")
    ]
    images = page.evaluate("() => document.querySelectorAll('main img').length")
    address = page.url
    screenshot(page, "model-desktop")
    context.close()

    latest = checks[-1]
    assert address.startswith(f"{live_server.url}/model/?shop={shop.domain}")
    assert [c.status for c in checks] == ["healthy", "degraded", "healthy"]
    assert figures[0][:2] == ["version", "v4"]
    assert figures[1] == ["auc", f"{latest.roc_auc:.3f}", "alert below 0.730"]
    assert figures[2] == ["ece", f"{latest.ece:.3f}", "alert above 0.050"]
    assert figures[3] == ["psi", f"{latest.psi:.3f}", "alert above 0.250"]
    assert status.startswith("Healthy on ")
    assert "600 scores of 600 finished sessions over the last 1 days" in status
    assert card_rows["Test ROC-AUC (whole sessions)"] == "0.810"
    assert card_rows["Test ROC-AUC (every prefix, what live scoring sees)"] == "0.780"
    assert card_rows["Test ECE (target 0.030)"] == "0.012"
    assert card_rows["Activation"] == HOSTILE
    assert history == [
        ["healthy", "v4", "600"],
        ["degraded", "v4", "600"],
        ["healthy", "v4", "600"],
    ]
    assert [row[0] for row in versions] == ["v4", "v3"]
    assert versions[0][5] == HOSTILE
    assert images == 0
    assert datasets[0] == ["Live ROC-AUC", [c.roc_auc for c in checks]]
    assert datasets[1][0] == "Alert below"
    assert datasets[1][1] == pytest.approx([0.73, 0.73, 0.73])
    assert all(p > 500 for p in painted)
    assert problems == []
