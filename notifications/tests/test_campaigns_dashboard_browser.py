"""The Campaigns page in real headless Chromium, against a live server and MariaDB: decisions by
the decision run, the toast's events, exposures and purchases through ingestion and the pipeline,
the experiment's stored result; then the list, the per-arm table, the chart, a hostile campaign
name shown as text, and Start / Pause / Stop through the campaign API with the CSRF token."""

import pytest

from analytics.tests.test_dashboard_browser import (
    CSP_WATCH,
    VIEWPORTS,
    log_in,
    screenshot,
    user_with_password,
)
from events.models import ShopMembership
from events.tests.factories import ShopFactory
from notifications.campaigns import services
from notifications.models import Campaign, CampaignStatus
from notifications.tests.test_campaigns import CONTENT, T0
from notifications.tests.test_campaigns_results import campaign_measured
from notifications.tests.test_experiments_dashboard_browser import PAINTED

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def campaign_shop(process_all):
    owner = user_with_password("owner")
    shop = ShopFactory(owner=owner, domain="tea.example.com", name="Tea Shop", currency="EUR")
    analyst = user_with_password("analyst")
    ShopMembership.objects.create(shop=shop, user=analyst, role=ShopMembership.Role.ANALYST)
    campaign, result = campaign_measured(shop, process_all, name=HOSTILE)
    draft = services.campaign_create(
        shop=shop,
        key="welcome",
        name="Welcome",
        trigger={"kind": "first_visit"},
        variants=[CONTENT],
        now=T0,
    )
    return shop, campaign, draft, result


def watched(context, problems):
    page = context.new_page()
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("dialog", lambda d: problems.append(f"dialog: {d.message}"))
    page.on(
        "response", lambda r: problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None
    )
    return page


def test_the_page_shows_results_hostile_names_as_text_and_the_owner_pauses_and_stops(
    browser, live_server, campaign_shop, settings
):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    shop, campaign, _, result = campaign_shop
    problems: list[str] = []
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    context.add_init_script(CSP_WATCH)
    page = watched(context, problems)

    log_in(page, live_server.url, "owner", path=f"/campaigns-dashboard/?shop={shop.domain}")
    page.wait_for_selector("#campaign-arms-table tbody tr[data-arm]")
    page.wait_for_function(
        "(id) => Chart.getChart(document.getElementById(id))", arg="campaign-chart"
    )
    listed = page.eval_on_selector_all(
        "#campaigns-table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    arms = page.eval_on_selector_all(
        "#campaign-arms-table tbody tr",
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))",
    )
    heading = page.inner_text("#campaign-name")
    verdict = page.inner_text("#campaign-verdict")
    incremental = page.inner_text("#campaign-incremental")
    painted = page.evaluate(PAINTED, "campaign-chart")
    images = page.evaluate("() => document.querySelectorAll('main img').length")
    buttons = [
        [button.text_content(), button.is_disabled(), button.is_visible()]
        for button in page.query_selector_all("#campaign-actions button")
    ]
    nav = page.eval_on_selector_all("nav.tabs a", "as => as.map(a => a.textContent.trim())")
    screenshot(page, "campaigns-desktop")
    # The emergency brake, then the campaign's own buttons: start again, pause, stop.
    page.click("#campaigns-pause-all")
    page.wait_for_selector("#campaigns-table tbody tr.selected .tag.paused")
    paused_all = (
        Campaign.objects.get(pk=campaign.pk).status,
        page.inner_text("#campaigns-message"),
        page.is_visible("#campaigns-pause-all"),
    )
    page.click("#campaign-actions button[data-action=start]")
    page.wait_for_selector("#campaigns-table tbody tr.selected .tag.running")
    page.wait_for_selector("#campaigns-pause-all", state="visible")
    page.click("#campaign-actions button[data-action=pause]")
    page.wait_for_selector("#campaigns-table tbody tr.selected .tag.paused")
    paused = Campaign.objects.get(pk=campaign.pk).status
    page.click("#campaign-actions button[data-action=stop]")
    page.wait_for_selector("#campaigns-table tbody tr.selected .tag.stopped")
    after_stop = page.eval_on_selector_all(
        "#campaign-actions button", "bs => bs.map(b => b.disabled)"
    )
    page.click("#campaigns-table tbody tr:has-text('Welcome')")
    page.wait_for_function(
        "() => document.getElementById('campaign-verdict').textContent.startsWith('A draft')"
    )
    draft_arms = page.eval_on_selector_all(
        "#campaign-arms-table tbody tr", "rows => rows.map(r => r.cells[0].textContent)"
    )
    draft_chart = page.inner_text("#campaign-chart + .empty-state")
    context.close()

    assert "Campaigns" in nav
    assert [row[:3] for row in listed] == [
        [HOSTILE, "running", "On-site"],
        ["Welcome", "draft", "On-site"],
    ]
    assert listed[0][3:7] == ["score in [0.20, 0.60]", "12", "5", "40%"]
    assert listed[0][8] == result.data["verdict"]
    assert heading == HOSTILE
    assert images == 0
    assert [row[:8] for row in arms] == [
        ["holdout (control)", "6", "0", "0", "0", "—", "6", "1"],
        ["nudge", "6", "5", "2", "1", "40%", "6", "3"],
    ]
    assert arms[0][11] == "—"
    assert "€" in arms[1][11]
    assert verdict == result.data["verdict"]
    assert incremental.startswith("Incremental revenue: ")
    assert "over 6 treated units (95 % interval, sequential)" in incremental
    assert painted > 500
    assert buttons == [["Start", True, True], ["Pause", False, True], ["Stop", False, True]]
    assert paused_all == (CampaignStatus.PAUSED, "1 campaign paused.", False)
    assert paused == CampaignStatus.PAUSED
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.STOPPED
    assert after_stop == [True, True, True]
    assert draft_arms == ["holdout (control)", "nudge"]
    assert draft_chart == "No decisions yet."
    assert problems == []


def test_an_analyst_sees_the_results_without_the_buttons(
    browser, live_server, campaign_shop, settings
):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    shop, campaign, _, _ = campaign_shop
    problems: list[str] = []
    context = browser.new_context(viewport=VIEWPORTS["mobile"])
    context.add_init_script(CSP_WATCH)
    page = watched(context, problems)

    path = f"/campaigns-dashboard/?shop={shop.domain}&campaign={campaign.pk}"
    log_in(page, live_server.url, "analyst", path=path)
    page.wait_for_selector("#campaign-arms-table tbody tr[data-arm]")
    visible = [
        button.is_visible() for button in page.query_selector_all("#campaign-actions button")
    ]
    selected = page.inner_text("#campaigns-table tr.selected td")
    pause_all = page.is_visible("#campaigns-pause-all")
    screenshot(page, "campaigns-mobile")
    context.close()

    assert visible == [False, False, False]
    assert not pause_all
    assert selected == HOSTILE
    assert problems == []
