"""The Customers page in real headless Chromium, against a live server and MariaDB: a shop with
enough order history for the customer model, refreshed by the nightly service; the page lists
the customers from the API, draws a profile, its spend chart and timeline, loads a session's
events on demand, and shows hostile ids, traits and URLs as text."""

from datetime import timedelta

import pytest

from analytics.tests.test_dashboard_browser import (
    CSP_WATCH,
    VIEWPORTS,
    log_in,
    screenshot,
    user_with_password,
)
from events.models import Event, Order, Person, Session, ShopMembership
from segments.services.customers import customer_predictions_refresh
from segments.tests.test_customer_refresh import NOW, _shop_with_orders

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOSTILE = "<img src=x onerror=alert(1)>"
PAINTED = """(id) => {
  const canvas = document.getElementById(id);
  if (!Chart.getChart(canvas)) return 0;
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) painted++;
  return painted;
}"""


@pytest.fixture
def customer_shop(db):
    owner = user_with_password("owner")
    shop, _ = _shop_with_orders(customers=150)
    ShopMembership.objects.create(shop=shop, user=owner, role="owner")
    star = Person.objects.filter(shop=shop).order_by("pk").first()
    Person.objects.filter(pk=star.pk).update(user_id=HOSTILE, traits={"name": HOSTILE, "age": 31})
    # The top spender by far, so the default sort (revenue) lists it first and selects it.
    Order.objects.create(shop=shop, person=star, order_id="big", placed_at=NOW - timedelta(days=3),
                         total=50_000)  # fmt: skip
    session = Session.objects.create(shop=shop, person=star, started_at=NOW - timedelta(days=3),
                                     ended_at=NOW - timedelta(days=3) + timedelta(minutes=5),
                                     entry_url="https://x/<b>in</b>", event_count=1)  # fmt: skip
    Event.objects.create(shop=shop, event_id="e1", type="page_view", person=star, session=session,
                         occurred_at=session.started_at, received_at=session.started_at,
                         title=HOSTILE, url="https://x/<b>in</b>")  # fmt: skip
    customer_predictions_refresh(shop_id=shop.pk, now=NOW)
    return shop, star


def test_customers_page_lists_draws_a_profile_and_shows_hostile_text_as_text(
    browser, live_server, customer_shop, settings
):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    shop, _ = customer_shop
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

    log_in(page, live_server.url, "owner", path=f"/customers/?shop={shop.domain}")
    page.wait_for_selector("#customers-table tbody tr[data-id]")
    page.wait_for_function("(id) => Chart.getChart(document.getElementById(id))", arg="spend-chart")
    first_row = page.eval_on_selector(
        "#customers-table tbody tr", "r => [...r.cells].map(c => c.textContent)"
    )
    heading = page.inner_text("#customer-name")
    model_note = page.inner_text("#model-note")
    traits = page.inner_text("#customer-traits")
    painted = page.evaluate(PAINTED, "spend-chart")
    datasets = page.evaluate(
        "() => Chart.getChart(document.getElementById('spend-chart')).data.datasets"
        ".map(d => d.data.length)"
    )
    kinds = page.eval_on_selector_all(
        "#timeline-table tbody tr", "rows => rows.map(r => r.className)"
    )
    page.click("#timeline-table tr.session button")
    page.wait_for_selector("#timeline-table tr.events-row")
    events = page.inner_text("#timeline-table tr.events-row")
    screenshot(page, "customers-desktop")
    page.select_option("#customer-sort", "-churn_risk")
    page.wait_for_function(
        "() => document.querySelector('#customers-page').textContent.includes('Page 1')"
    )
    choice = page.inner_text("#model-choice")
    backtest = page.eval_on_selector_all(
        "#model-backtest tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    bands = page.eval_on_selector_all(
        "#age-bands-table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    page.click("#age-bands-table tr[data-band='26-35']")
    page.wait_for_function(
        "() => document.querySelector('#customers-page').textContent.includes(' 1 customers')"
    )
    in_band = page.inner_text("#customers-table tbody tr td")
    page.select_option("#customer-age-band", "")
    page.fill("#customer-search", "u149")
    page.click("#customer-search-form button[type=submit]")
    # The age band's list also has one row: wait for the search's answer, not just one row.
    page.wait_for_function(
        "() => { const rows = document.querySelectorAll('#customers-table tbody tr[data-id]');"
        " return rows.length === 1 && rows[0].cells[0].textContent === 'u149'; }"
    )
    found = page.inner_text("#customers-table tbody tr td")
    images = page.evaluate("() => document.querySelectorAll('main img, main b').length")
    context.close()

    assert first_row[0] == HOSTILE
    assert heading == HOSTILE
    assert f"name: {HOSTILE}" in traits
    assert model_note.startswith("BG/NBD + Gamma-Gamma fitted on ")
    assert painted > 500
    assert datasets[0] >= 2
    assert datasets[1] == 7
    assert {"session", "order"} <= set(kinds)
    assert HOSTILE in events
    assert "page_view" in events
    # 300 days of orders: the shop's own backtest ran; BG/NBD won (seeded data), the table
    # shows the three models' figures with the one used marked.
    assert choice.startswith("Model choice: BG/NBD + Gamma-Gamma (the gradient-boosted model won")
    assert "at least two of" in choice
    assert [row[0] for row in backtest] == [
        "BG/NBD + Gamma-Gamma (used)",
        "Gradient-boosted RFM model",
        "Baseline (last 90 days repeated)",
    ]
    assert all(cell != "—" for cell in backtest[0][1:4])
    assert [row[0] for row in bands] == [
        "18-25",
        "26-35",
        "36-45",
        "46-55",
        "56-65",
        "66+",
        "Not sent",
    ]
    assert bands[1][1] == "1"  # the star, aged 31
    assert in_band == HOSTILE
    assert found == "u149"
    assert images == 0
    assert problems == []


def test_customers_page_of_a_shop_without_history_says_why(browser, live_server, db, settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    owner = user_with_password("owner")
    shop, _ = _shop_with_orders(customers=20, days=40, spread=False)
    ShopMembership.objects.create(shop=shop, user=owner, role="owner")
    customer_predictions_refresh(shop_id=shop.pk, now=NOW)
    context = browser.new_context(viewport=VIEWPORTS["mobile"])
    page = context.new_page()

    log_in(page, live_server.url, "owner", path=f"/customers/?shop={shop.domain}")
    page.wait_for_selector("#customers-table tbody tr[data-id]")
    page.wait_for_function("() => !document.getElementById('customer-detail').hidden")
    note = page.inner_text("#model-note")
    facts = page.inner_text("#customer-facts")
    screenshot(page, "customers-mobile-no-model")
    context.close()

    assert note.startswith("No predictions for this shop yet. Predictions need at least 100")
    assert "Predictions: none: Predictions need at least 100" in facts
