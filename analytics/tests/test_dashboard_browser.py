"""The dashboard in real headless Chromium, against a live server and MariaDB.

One seeded shop (simulated journeys through `events_ingest`, the pipeline and a rollup rebuild)
per test; screenshots of every page at desktop and phone width go to test-artifacts/screenshots/.
"""

import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from analytics.services.rollups import rollups_rebuild
from events.models import Event
from events.services.ingest import events_ingest
from events.simulator import Simulator
from events.tests.factories import ShopFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHART_PAGES = {
    "overview": ("/", ["overview-trend", "overview-visitors"]),
    "traffic": ("/traffic/", ["traffic-chart", "revenue-chart"]),
    "funnel": ("/funnel/", ["funnel-chart"]),
    "products": ("/products/", ["products-chart"]),
    "carts": ("/carts/", ["carts-chart"]),
    "retention": ("/retention/", ["retention-chart"]),
    "geography": ("/geography/", ["geo-chart"]),
    "audience": ("/audience/", []),
    "live": ("/live/", []),
    "reports": ("/reports/", []),
    "experiments": ("/experiments-dashboard/", []),
    "campaigns": ("/campaigns-dashboard/", []),
    "install": ("/install/", []),
}
# The dashboard's policy (clickserver/settings.py): nothing inline, nothing from another origin.
# django-csp writes the directives in no fixed order.
CSP = frozenset(
    [
        "default-src 'self'",
        "base-uri 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "img-src 'self' data:",
        "object-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
    ]
)
# Chromium also logs a violation as a console error; this names the directive and what it blocked.
CSP_WATCH = (
    "document.addEventListener('securitypolicyviolation', (e) =>"
    " console.error('csp violation: ' + e.violatedDirective + ' ' + e.blockedURI));"
)
VIEWPORTS = {"desktop": {"width": 1366, "height": 900}, "mobile": {"width": 390, "height": 844}}
# Chart.getChart(canvas) is the chart drawn on it; count its data points and painted pixels.
CHART_STATE = """(id) => {
  const canvas = document.getElementById(id);
  const chart = Chart.getChart(canvas);
  if (!chart) return {points: 0, painted: 0};
  const points = chart.data.datasets.reduce(
    (n, d) => n + d.data.filter((v) => Number(v) > 0).length, 0);
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) painted++;
  return {points, painted};
}"""


def user_with_password(username: str, **fields):
    # UserFactory skips the save after set_password; a login form needs the hash stored.
    user = UserFactory(username=username, **fields)
    user.set_password(PASSWORD)
    user.save()
    return user


@pytest.fixture
def owner(db):
    return user_with_password("owner", is_staff=True)


@pytest.fixture
def seeded_shop(owner, process_all, celery_eager):
    """45 days of simulated journeys, processed and rolled up: every page has figures."""
    shop = ShopFactory(owner=owner, domain="tea.example.com", name="Tea Shop", currency="EUR")
    now = timezone.now()
    simulator = Simulator(shop_domain=shop.domain, seed=11)
    events = [e for journey in simulator.history(visitors=250, days=45, end=now) for e in journey]
    events = [e for e in events if e["timestamp"] <= now.isoformat()]
    for i in range(0, len(events), 500):
        events_ingest(shop=shop, events=events[i : i + 500], received_at=now, sent_at=now)
    process_all(shop)  # sessions, people, and an order for each purchase event
    rollups_rebuild(shop_id=shop.pk, now=now)
    return shop


@pytest.fixture
def watch():
    """Collects console errors, page errors and failed requests of every page it is given."""
    problems: list[str] = []

    def attach(page):
        page.on(
            "console",
            lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
        page.on(
            "response",
            lambda r: problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None,
        )
        return page

    attach.problems = problems
    return attach


def log_in(page, base_url: str, username: str, path: str = "/") -> None:
    page.goto(base_url + path)
    assert "/accounts/login/" in page.url
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")


def wait_for_charts(page, canvases: list[str]) -> list[dict]:
    page.wait_for_function(
        "(ids) => ids.every((id) => Chart.getChart(document.getElementById(id)))",
        arg=canvases,
        timeout=15000,
    )
    return [page.evaluate(CHART_STATE, c) for c in canvases]


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_every_page_renders_its_charts_at_desktop_and_mobile_width(
    browser, live_server, seeded_shop, watch, settings
):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    states: dict[str, list[dict]] = {}
    policies = set()
    for viewport, size in VIEWPORTS.items():
        context = browser.new_context(viewport=size)
        context.add_init_script(CSP_WATCH)
        page = watch(context.new_page())
        log_in(page, live_server.url, "owner")
        for name, (path, canvases) in CHART_PAGES.items():
            response = page.goto(f"{live_server.url}{path}?shop={seeded_shop.domain}")
            policies.add(frozenset(response.headers["content-security-policy"].split("; ")))
            states[f"{viewport}-{name}"] = wait_for_charts(page, canvases) if canvases else []
            page.wait_for_function("() => !document.body.innerText.includes('Loading…')")
            page.wait_for_load_state("networkidle")
            screenshot(page, f"{name}-{viewport}")
        context.close()

    empty = {
        key: state
        for key, state in states.items()
        if any(s["points"] == 0 or s["painted"] < 500 for s in state)
    }
    assert empty == {}
    assert policies == {CSP}
    assert watch.problems == []


def test_admin_and_api_docs_run_under_the_csp(browser, live_server, db, watch, settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    user_with_password("root", is_staff=True, is_superuser=True)
    shop = ShopFactory()
    context = browser.new_context()
    context.add_init_script(CSP_WATCH)
    page = watch(context.new_page())

    log_in(page, live_server.url, "root")
    policies = set()
    for path in ("/admin/", "/admin/events/shop/", f"/admin/events/shop/{shop.pk}/change/"):
        policy = page.goto(live_server.url + path).headers["content-security-policy"]
        policies.add(frozenset(policy.split("; ")))
        page.wait_for_load_state("networkidle")
    docs_policy = page.goto(live_server.url + "/api/docs/").headers["content-security-policy"]
    page.wait_for_selector(".swagger-ui .info .title")
    title = page.inner_text(".swagger-ui .info .title")
    context.close()

    assert policies == {CSP}
    # Swagger UI styles its elements inline; its scripts still come from this origin only.
    assert frozenset(docs_policy.split("; ")) == CSP - {"style-src 'self'"} | {
        "style-src 'self' 'unsafe-inline'"
    }
    assert title.startswith("clickserver API")
    assert watch.problems == []


def test_date_picker_changes_the_figures(browser, live_server, seeded_shop, watch, settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    page = watch(context.new_page())
    log_in(page, live_server.url, "owner")
    page.wait_for_function(
        "() => document.querySelector('[data-kpi=sessions] .kpi-value').textContent !== '–'"
    )
    sessions_30 = page.inner_text("[data-kpi=sessions] .kpi-value")

    page.click("a.preset[data-days='7']")
    page.wait_for_load_state()
    page.wait_for_function(
        "() => document.querySelector('[data-kpi=sessions] .kpi-value').textContent !== '–'"
    )
    sessions_7 = page.inner_text("[data-kpi=sessions] .kpi-value")
    start = (timezone.now() - timedelta(days=90)).date().isoformat()
    page.fill("#start", start)
    page.click("#period-form button[type=submit]")
    page.wait_for_load_state()
    page.wait_for_function(
        "() => document.querySelector('[data-kpi=sessions] .kpi-value').textContent !== '–'"
    )
    sessions_custom = page.inner_text("[data-kpi=sessions] .kpi-value")
    context.close()

    assert int(sessions_7.replace(",", "")) < int(sessions_30.replace(",", ""))
    assert int(sessions_custom.replace(",", "")) > int(sessions_30.replace(",", ""))
    assert f"start={start}" in page.url
    assert watch.problems == []


def test_live_stream_shows_an_event_posted_through_the_api_within_5_seconds(
    browser, live_server, seeded_shop, watch, settings
):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    page = watch(context.new_page())
    log_in(page, live_server.url, "owner", path=f"/live/?shop={seeded_shop.domain}")
    page.wait_for_selector("#live-table tbody tr[data-id]")
    event_id = str(uuid.uuid4())

    posted = page.evaluate(
        """async (args) => (await fetch('/events/', {method: 'POST',
             headers: {'Content-Type': 'application/json', 'X-Write-Key': args.key},
             body: JSON.stringify({event_id: args.id, type: 'add_to_cart',
               anonymous_id: 'live-visitor', product: {id: 'LIVE-1', price: '5'}})})).status""",
        {"key": seeded_shop.write_key, "id": event_id},
    )
    started = time.monotonic()
    new_id = Event.objects.get(shop=seeded_shop, event_id=event_id).pk
    page.wait_for_selector(f"#live-table tr[data-id='{new_id}']", timeout=5000)
    elapsed = time.monotonic() - started
    row = page.inner_text(f"#live-table tr[data-id='{new_id}']")
    context.close()

    assert posted == 202
    assert elapsed < 5
    assert "Add to cart" in row
    assert "LIVE-1" in row
    assert watch.problems == []


def test_staff_demo_button_generates_traffic(browser, live_server, seeded_shop, watch, settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    page = watch(context.new_page())
    log_in(page, live_server.url, "owner", path=f"/install/?shop={seeded_shop.domain}")
    before = Event.objects.filter(shop=seeded_shop).count()

    page.click("button[data-demo='/demo/generate-anomalies/']")
    page.wait_for_function(
        "() => document.getElementById('demo-result').textContent.startsWith('Sent')"
    )
    result = page.inner_text("#demo-result")
    context.close()

    assert Event.objects.filter(shop=seeded_shop).count() > before + 300
    assert "events from 302 visits" in result
    assert watch.problems == []


def test_a_user_without_access_cannot_see_the_shop(browser, live_server, db, settings):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    outsider = user_with_password("outsider")
    ShopFactory(owner=outsider, domain="own.example.com", name="Own Shop")
    ShopFactory(domain="secret.example.com", name="Secret Shop")
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    page = context.new_page()
    log_in(page, live_server.url, "outsider")
    options = page.eval_on_selector_all("#shop-switcher option", "os => os.map(o => o.value)")

    response = page.goto(f"{live_server.url}/?shop=secret.example.com")
    api_status = page.evaluate(
        "async () => (await fetch('/analytics/kpis/?shop=secret.example.com')).status"
    )
    context.close()

    assert options == ["own.example.com"]
    assert response.status == 404
    assert api_status == 404


FORECAST_STATE = """() => {
  const chart = Chart.getChart(document.getElementById('overview-trend'));
  const sets = chart.data.datasets;
  const byLabel = (label) => sets.find((d) => d.label === label).data;
  // The period's days end where the dashed line starts (its first point is the last period
  // day); a day without revenue has a null bar, so the bars are not counted by their values.
  const start = byLabel('Revenue forecast').findIndex((v) => v !== null);
  return {
    labels: chart.data.labels.length,
    bars: start + 1,
    barsAfter: sets[0].data.slice(start + 1).filter((v) => v !== null).length,
    dash: sets.find((d) => d.forecast).borderDash,
    point: byLabel('Revenue forecast'),
    low80: byLabel('80 % low'), high80: byLabel('80 % interval'),
    low95: byLabel('95 % low'), high95: byLabel('95 % interval'),
    fills: sets.filter((d) => d.forecastBand && d.fill === '-1').length,
  };
}"""


def test_overview_continues_the_revenue_chart_with_the_forecast(
    browser, live_server, seeded_shop, watch, settings
):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    context = browser.new_context(viewport=VIEWPORTS["desktop"])
    context.add_init_script(CSP_WATCH)
    page = watch(context.new_page())
    log_in(page, live_server.url, "owner", path=f"/?shop={seeded_shop.domain}")
    wait_for_charts(page, ["overview-trend"])
    page.wait_for_function(
        "() => document.getElementById('overview-forecast-note').textContent !== ''"
    )
    state = page.evaluate(FORECAST_STATE)
    note = page.inner_text("#overview-forecast-note")
    api = page.evaluate(
        "(domain) => fetch('/segments/forecast/?shop=' + domain).then((r) => r.json())",
        seeded_shop.domain,
    )
    screenshot(page, "overview-forecast-desktop")
    context.close()

    assert api["reason"] == ""
    assert len(api["days"]) == 28
    # The forecast's days after the period's last bar follow the bars, the dashed line starting
    # from that bar: after today, or from today on when today has no row yet (a run just after
    # midnight, before the day's first event).
    after_today = [d for d in api["days"] if d["date"] > api["origin"]]
    assert state["labels"] > state["bars"]
    ahead = api["days"][state["bars"] - state["labels"] :]
    assert ahead in (after_today, api["days"])
    assert state["barsAfter"] == 0
    assert state["dash"] == [6, 4]
    assert state["fills"] == 2
    tail = slice(state["bars"], None)
    assert state["point"][tail] == [d["revenue"]["point"] for d in ahead]
    assert state["high95"][tail] == [d["revenue"]["upper_95"] for d in ahead]
    assert state["low80"][tail] == [d["revenue"]["lower_80"] for d in ahead]
    assert state["point"][: state["bars"] - 1] == [None] * (state["bars"] - 1)
    assert state["point"][state["bars"] - 1] is not None
    for i in range(state["bars"], state["labels"]):
        assert state["low95"][i] <= state["low80"][i] <= state["point"][i]
        assert state["point"][i] <= state["high80"][i] <= state["high95"][i]
    assert note.startswith(f"Dashed: the revenue forecast for the next {len(ahead)} days")
    assert watch.problems == []
