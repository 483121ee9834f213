"""The Experiments page in real headless Chromium, against a live server and MariaDB: exposures
and orders go in through `events_ingest` and the pipeline, the result is computed by the results
service, and the page draws it from the JSON API."""

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
from events.services.ingest import events_ingest
from events.tests.factories import ShopFactory
from notifications.experiments import services
from notifications.experiments.results import experiments_refresh
from notifications.experiments.rules import VariantIn
from notifications.models import ExperimentResult

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOSTILE = "<img src=x onerror=alert(1)>"
PER_ARM_A_DAY = 40
DAYS = 3
# Units (of 40 a day) that buy: 4 in control, 10 in the treatment.
BUYERS = {"control": 4, "b": 10}
PAINTED = """(id) => {
  const canvas = document.getElementById(id);
  if (!Chart.getChart(canvas)) return 0;
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) painted++;
  return painted;
}"""


def journeys(key: str, start) -> list[dict]:
    events = []
    for day in range(DAYS):
        at = start + timedelta(days=day, hours=2)
        for variant, buyers in BUYERS.items():
            for i in range(PER_ARM_A_DAY):
                visitor = f"{variant}-{day}-{i}"
                properties = {"experiment": key, "variant": variant, "phase": 1}
                events.append(
                    {
                        "event_id": f"{visitor}-x",
                        "type": "experiment_exposure",
                        "anonymous_id": visitor,
                        "timestamp": at.isoformat(),
                        "properties": properties,
                    }
                )
                if i < buyers:
                    events.append(
                        {
                            "event_id": f"{visitor}-p",
                            "type": "purchase",
                            "anonymous_id": visitor,
                            "timestamp": (at + timedelta(minutes=5)).isoformat(),
                            "order": {"id": f"o-{visitor}", "revenue": "25.00"},
                        }
                    )
    return events


@pytest.fixture
def experiment_shop(process_all):
    owner = user_with_password("owner")
    shop = ShopFactory(owner=owner, domain="tea.example.com", name="Tea Shop", currency="EUR")
    now = timezone.now()
    start = now - timedelta(days=DAYS + 1)
    experiment = services.experiment_create(
        shop=shop,
        key="hostile",
        name=HOSTILE,
        hypothesis="Blue converts better",
        unit="person",
        primary_metric={"kind": "conversion"},
        secondary_metrics=[{"kind": "revenue_per_unit"}],
        guardrail_metrics=[{"kind": "bounce"}],
        variants=[
            VariantIn(key="control", weight=1, is_control=True),
            VariantIn(key="b", name="Blue <b>bold</b>", weight=1),
        ],
        is_sequential=False,
    )
    experiment = services.experiment_start(experiment=experiment, now=start)
    services.experiment_create(
        shop=shop,
        key="draft",
        name="A draft",
        unit="person",
        primary_metric={"kind": "conversion"},
        variants=[VariantIn(key="control", weight=1, is_control=True), VariantIn("b", 1)],
    )
    events = journeys("hostile", start)
    for i in range(0, len(events), 500):
        events_ingest(shop=shop, events=events[i : i + 500], received_at=now, sent_at=now)
    process_all(shop)
    experiments_refresh(shop_id=shop.pk, now=now)  # folds the exposures, stores the result
    return shop, experiment, ExperimentResult.objects.get(experiment=experiment)


def test_the_page_shows_the_arms_verdict_chart_and_hostile_names_as_text(
    browser, live_server, experiment_shop, settings
):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False
    shop, experiment, result = experiment_shop
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

    path = f"/experiments-dashboard/?shop={shop.domain}&experiment={experiment.pk}"
    log_in(page, live_server.url, "owner", path=path)
    page.wait_for_selector("#arms-table tbody tr[data-variant]")
    page.wait_for_function(
        "(id) => Chart.getChart(document.getElementById(id))", arg="uplift-chart"
    )
    listed = page.eval_on_selector_all(
        "#experiments-table tbody tr",
        "rows => rows.map(r => [r.cells[0].textContent, r.cells[1].textContent])",
    )
    arms = page.eval_on_selector_all(
        "#arms-table tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    verdict = page.inner_text("#experiment-verdict")
    heading = page.inner_text("#experiment-name")
    painted = page.evaluate(PAINTED, "uplift-chart")
    images = page.evaluate("() => document.querySelectorAll('main img, main b').length")
    selected = page.inner_text("#experiments-table tr.selected td")
    screenshot(page, "experiments-desktop")
    page.click("#experiments-table tbody tr:has-text('A draft')")
    page.wait_for_function(
        "() => Chart.getChart(document.getElementById('uplift-chart')) === undefined"
    )
    draft_verdict = page.inner_text("#experiment-verdict")
    draft_arms = page.inner_text("#arms-table tbody")
    address = page.url
    context.close()

    assert sorted(listed) == sorted([[HOSTILE, "running"], ["A draft", "draft"]])
    assert selected == HOSTILE
    assert heading == HOSTILE
    assert images == 0
    units = PER_ARM_A_DAY * DAYS
    assert [row[:4] for row in arms] == [
        ["control", str(units), str(units), str(BUYERS["control"] * DAYS)],
        ["Blue <b>bold</b> (b)", str(units), str(units), str(BUYERS["b"] * DAYS)],
    ]
    assert arms[0][5] == "—"
    assert arms[1][5].startswith("+")
    assert verdict == result.data["verdict"]
    assert verdict.startswith("Variant Blue <b>bold</b> raised conversion by 15.0 pp")
    assert painted > 500
    assert draft_verdict.startswith("A draft has no results")
    assert draft_arms == draft_verdict
    assert f"experiment={experiment.pk}" not in address
    assert "experiment=" in address
    assert problems == []
