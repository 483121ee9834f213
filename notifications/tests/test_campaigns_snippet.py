"""The toast in the storefront snippet: served only to shops running an on-site campaign, within
the 8 KB budget, and in headless Chromium shown once as text, never over the checkout button,
dismissable by keyboard, its events sent through ingestion."""

import gzip
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from conftest import live_server_requests_wait
from events.models import Event
from events.services.ingest import PROCESS_DEBOUNCE_SECONDS
from events.snippet import NOTIFICATIONS_PLACEHOLDER
from events.tests import storefront_urls
from events.tests.factories import EventFactory, PersonFactory
from notifications.campaigns import decisions, services
from notifications.campaigns.rules import ContentIn
from notifications.experiments import services as experiment_services
from notifications.experiments.results import experiment_results_compute, experiments_refresh
from notifications.experiments.rules import VariantIn
from notifications.fixed_model import fixed_model_activate, fixed_score
from notifications.models import CampaignDecision
from notifications.tests.factories import ConversionScoreFactory, SessionFactory
from notifications.tests.test_campaigns import anonymous_ids_in

HOSTILE = "<img src=x onerror=alert(1)>"
CONTENT = ContentIn(
    key="nudge",
    title="Still deciding, {first_name}?",
    body="{product} is in your cart",
    cta_url="/cart",
    cta_text="Back to cart",
)


def campaign_running(shop, **overrides):
    campaign = services.campaign_create(
        **{
            "shop": shop,
            "key": "nudge",
            "name": "Nudge",
            "trigger": {"kind": "score_band", "low": 0.2, "high": 0.6},
            "variants": [CONTENT],
            "holdout_share": 0.5,
            "is_consent_required": False,
            "now": timezone.now(),
        }
        | overrides
    )
    return services.campaign_start(campaign=campaign, now=timezone.now())


@pytest.mark.django_db
def test_the_toast_code_is_served_only_with_a_running_campaign(
    client, shop, django_capture_on_commit_callbacks
):
    plain = client.get(f"/snippet/{shop.write_key}.js").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        campaign_running(shop)

    with_toast = client.get(f"/snippet/{shop.write_key}.js").content.decode()

    assert NOTIFICATIONS_PLACEHOLDER in plain
    assert "notification_shown" not in plain
    assert "notification_shown" in with_toast


@pytest.mark.django_db
def test_the_snippet_with_experiments_and_the_toast_is_at_most_8_kb_gzipped(client, shop):
    campaign_running(shop)
    experiment_services.experiment_start(
        experiment=experiment_services.experiment_create(
            shop=shop,
            key="buttons",
            name="buttons",
            unit="person",
            primary_metric={"kind": "conversion"},
            variants=[VariantIn("a", 1, is_control=True), VariantIn("b", 1)],
        ),
        now=timezone.now(),
    )

    body = client.get(f"/snippet/{shop.write_key}.js").content

    assert b"function bucket" in body
    assert b"notification_shown" in body
    assert len(gzip.compress(body, compresslevel=9)) <= 8 * 1024


# --- in headless Chromium --------------------------------------------------------------------


@pytest.fixture
def context(browser, celery_eager, live_server):
    storefront_urls.cart_attributes.clear()
    context = browser.new_context(viewport={"width": 800, "height": 600})
    yield context
    context.close()
    live_server_requests_wait(live_server)


def decided_for(shop, anonymous_id: str) -> None:
    """A live session of this browser in the band, decided by the pipeline's follow-up."""
    now = timezone.now()
    person = PersonFactory(shop=shop, traits={"first_name": "Ada"})
    session = SessionFactory(
        shop=shop, person=person, started_at=now - timedelta(minutes=3), ended_at=now
    )
    EventFactory(
        shop=shop,
        session=session,
        person=person,
        anonymous_id=anonymous_id,
        type="add_to_cart",
        product_id="p1",
        product_name=HOSTILE,
        product_price=Decimal("10.00"),
        product_quantity=1,
        occurred_at=now - timedelta(minutes=1),
    )
    ConversionScoreFactory(session=session, score=0.4, scored_at=now)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=now)


def events_of(shop, kinds: set[str], count: int, timeout: float = 12.0) -> list[Event]:
    deadline = time.monotonic() + timeout
    while True:
        events = list(Event.objects.filter(shop=shop, type__in=kinds).order_by("id"))
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


@pytest.mark.browser
@pytest.mark.urls("events.tests.storefront_urls")
@pytest.mark.django_db(transaction=True)
def test_the_toast_shows_the_hostile_name_as_text_once_away_from_checkout(
    context, live_server, shop
):
    campaign = campaign_running(shop)
    (anonymous_id,) = anonymous_ids_in(campaign, "nudge", 1)
    decided_for(shop, anonymous_id)
    context.add_cookies([{"name": "_cs_aid", "value": anonymous_id, "url": live_server.url}])
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    cart = f"{live_server.url}/store/{shop.write_key}/cart/"
    # The checkout button where the toast would first go (bottom right), styled before the
    # snippet can show anything.
    page.add_init_script(
        "document.addEventListener('DOMContentLoaded', () => {"
        " const s = document.createElement('style');"
        " s.textContent = '#checkout{position:fixed;right:20px;bottom:20px;padding:20px}';"
        " document.head.appendChild(s); });"
    )
    page.goto(cart)

    toast = page.wait_for_selector("[role=status]", timeout=15000)
    text = toast.inner_text()
    overlap = page.evaluate(
        """() => {
          const a = document.querySelector('[role=status]').getBoundingClientRect();
          const b = document.querySelector('#checkout').getBoundingClientRect();
          return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
        }"""
    )
    images = page.eval_on_selector_all("[role=status] img", "els => els.length")
    live = toast.get_attribute("aria-live")
    href = page.eval_on_selector("[role=status] a", "a => a.getAttribute('href')")
    page.focus("[role=status] button[aria-label=Dismiss]")
    page.keyboard.press("Escape")
    page.wait_for_selector("[role=status]", state="detached")
    page.evaluate("clickserver.flush()")
    sent = events_of(shop, {"notification_shown", "notification_dismissed"}, 2)
    exposure = events_of(shop, {"experiment_exposure"}, 1)
    page.reload()
    page.wait_for_function("() => window.clickserver && clickserver.loaded")
    page.wait_for_timeout(1500)
    again = page.query_selector("[role=status]")

    assert f"Still deciding, Ada?\n\n{HOSTILE} is in your cart" in text
    assert (images, dialogs, overlap, live, href) == (0, [], False, "polite", "/cart")
    assert [e.type for e in sent] == ["notification_shown", "notification_dismissed"]
    assert sent[0].properties["decision"] == CampaignDecision.objects.get().pk
    assert [(e.properties["experiment"], e.properties["variant"]) for e in exposure] == [
        ("campaign-nudge", "nudge")
    ]
    assert again is None


# A desktop Chrome's user agent: a headless browser's own ("HeadlessChrome") is rightly tagged
# as a bot by detection (which eager Celery runs after each batch), and bots are never scored.
SHOPPER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/131.0.0.0 Safari/537.36"
)


@pytest.mark.browser
@pytest.mark.urls("events.tests.storefront_urls")
@pytest.mark.django_db(transaction=True)
def test_a_shopper_whose_own_page_views_move_the_score_into_the_band_sees_the_toast(
    browser, celery_eager, live_server, shop, tmp_path
):
    """No decision made by the test: the browser's events go through ingestion and the pipeline
    (eager Celery, in the live server's requests), the fixed model scores the visit n / (n + 6),
    the decision stage runs after the scores, and the snippet's next poll shows the toast. Two
    page views score 0.25, under the band; the third scores 0.33, inside it."""
    fixed_model_activate(shop=shop, directory=tmp_path, now=timezone.now())
    campaign = campaign_running(shop, trigger={"kind": "score_band", "low": 0.3, "high": 0.6})
    (anonymous_id,) = anonymous_ids_in(campaign, "nudge", 1)
    context = browser.new_context(user_agent=SHOPPER_AGENT)
    context.add_cookies([{"name": "_cs_aid", "value": anonymous_id, "url": live_server.url}])
    page = context.new_page()
    store = f"{live_server.url}/store/{shop.write_key}"
    try:
        for number in (1, 2):
            page.goto(f"{store}/home/")
            page.wait_for_function("() => window.clickserver && clickserver.loaded")
            page.evaluate("clickserver.flush()")
            events_of(shop, {"page_view"}, number)
            live_server_requests_wait(live_server)
            # Ingestion asks for a pipeline run at most once a second per shop, delayed to take
            # that second's events; eager Celery runs it at once, so the next page waits it out.
            time.sleep(PROCESS_DEBOUNCE_SECONDS + 0.1)
        before = list(CampaignDecision.objects.filter(campaign=campaign))
        page.goto(f"{store}/cart/")
        toast = page.wait_for_selector("[role=status]", timeout=20000)
        text = toast.inner_text()
        shown = events_of(shop, {"notification_shown"}, 1)
    finally:
        context.close()  # its last requests are waited for by the autouse fixture (conftest.py)

    decision = CampaignDecision.objects.get(campaign=campaign)
    assert before == []
    assert (decision.anonymous_id, decision.arm) == (anonymous_id, "nudge")
    assert not decision.is_holdout
    assert decision.score == pytest.approx(fixed_score(3), abs=1e-4)
    assert "Still deciding" in text
    assert [e.properties["decision"] for e in shown] == [decision.pk]


@pytest.mark.browser
@pytest.mark.urls("events.tests.storefront_urls")
@pytest.mark.django_db(transaction=True)
def test_a_holdout_browser_sees_nothing_but_records_its_exposure(context, live_server, shop):
    campaign = campaign_running(shop)
    (anonymous_id,) = anonymous_ids_in(campaign, "holdout", 1)
    decided_for(shop, anonymous_id)
    context.add_cookies([{"name": "_cs_aid", "value": anonymous_id, "url": live_server.url}])
    page = context.new_page()

    page.goto(f"{live_server.url}/store/{shop.write_key}/cart/")
    page.wait_for_function("() => window.clickserver && clickserver.loaded")
    page.wait_for_timeout(1500)
    page.evaluate("clickserver.flush()")
    exposure = events_of(shop, {"experiment_exposure"}, 1)

    assert page.query_selector("[role=status]") is None
    assert [e.properties["variant"] for e in exposure] == ["holdout"]
    assert not Event.objects.filter(shop=shop, type="notification_shown").exists()


@pytest.mark.browser
@pytest.mark.urls("events.tests.storefront_urls")
@pytest.mark.django_db(transaction=True)
def test_a_click_on_the_call_to_action_is_recorded_with_its_discount_link(
    context, live_server, shop
):
    campaign = campaign_running(shop)
    services.discount_codes_upload(campaign=campaign, codes=["SAVE10"])
    (anonymous_id,) = anonymous_ids_in(campaign, "nudge", 1)
    decided_for(shop, anonymous_id)
    context.add_cookies([{"name": "_cs_aid", "value": anonymous_id, "url": live_server.url}])
    page = context.new_page()

    page.goto(f"{live_server.url}/store/{shop.write_key}/home/")
    page.wait_for_selector("[role=status]", timeout=15000)
    href = page.eval_on_selector("[role=status] a", "a => a.getAttribute('href')")
    page.click("[role=status] a")
    clicked = events_of(shop, {"notification_clicked"}, 1)

    assert href == "/cart?discount=SAVE10"
    assert [e.properties["decision"] for e in clicked] == [CampaignDecision.objects.get().pk]


@pytest.mark.browser
@pytest.mark.urls("events.tests.storefront_urls")
@pytest.mark.django_db(transaction=True)
def test_without_consent_a_consent_campaign_shows_nothing(context, live_server, shop):
    campaign = campaign_running(shop, is_consent_required=True)
    (anonymous_id,) = anonymous_ids_in(campaign, "nudge", 1)
    decided_for(shop, anonymous_id)
    context.add_cookies([{"name": "_cs_aid", "value": anonymous_id, "url": live_server.url}])
    page = context.new_page()

    page.goto(f"{live_server.url}/store/{shop.write_key}/home/")
    page.wait_for_function("() => window.clickserver && clickserver.loaded")
    page.wait_for_timeout(1500)
    before = page.query_selector("[role=status]")
    page.evaluate("clickserver.consent(true)")
    after = page.wait_for_selector("[role=status]", timeout=15000)

    assert before is None
    assert after is not None


@pytest.mark.browser
@pytest.mark.urls("events.tests.storefront_urls")
@pytest.mark.django_db(transaction=True)
def test_a_shopper_who_already_bought_sees_nothing(context, live_server, shop):
    campaign = campaign_running(shop)
    (anonymous_id,) = anonymous_ids_in(campaign, "nudge", 1)
    now = timezone.now()
    person = PersonFactory(shop=shop)
    session = SessionFactory(
        shop=shop, person=person, started_at=now - timedelta(minutes=3), ended_at=now
    )
    EventFactory(
        shop=shop,
        session=session,
        person=person,
        anonymous_id=anonymous_id,
        type="purchase",
        occurred_at=now - timedelta(minutes=1),
    )
    ConversionScoreFactory(session=session, score=0.4, scored_at=now)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=now)
    context.add_cookies([{"name": "_cs_aid", "value": anonymous_id, "url": live_server.url}])
    page = context.new_page()

    page.goto(f"{live_server.url}/store/{shop.write_key}/home/")
    page.wait_for_function("() => window.clickserver && clickserver.loaded")
    page.wait_for_timeout(1500)
    page.evaluate("clickserver.flush()")
    viewed = events_of(shop, {"page_view"}, 1)

    assert page.query_selector("[role=status]") is None
    assert len(viewed) == 1
    assert not CampaignDecision.objects.filter(campaign=campaign).exists()
    assert not Event.objects.filter(
        shop=shop, type__in=["experiment_exposure", "notification_shown"]
    ).exists()


@pytest.mark.browser
@pytest.mark.urls("events.tests.storefront_urls")
@pytest.mark.django_db(transaction=True)
def test_a_browser_that_bought_after_its_decision_was_made_is_shown_nothing(
    context, live_server, shop
):
    """The decision was made, then the shopper bought before the toast's next poll (the server
    has not processed the purchase): the snippet shows nothing and records no exposure."""
    campaign = campaign_running(shop)
    (anonymous_id,) = anonymous_ids_in(campaign, "nudge", 1)
    context.add_cookies([{"name": "_cs_aid", "value": anonymous_id, "url": live_server.url}])
    page = context.new_page()
    page.goto(f"{live_server.url}/store/{shop.write_key}/home/")
    page.wait_for_function("() => window.clickserver && clickserver.loaded")
    page.evaluate("clickserver.track('purchase'); clickserver.flush()")
    events_of(shop, {"purchase"}, 1)
    # The purchase's request runs the pipeline (eager Celery) after ingestion has stored the
    # event: let it finish first, or it may process the purchase into the session decided below
    # and the decision is rightly never made.
    live_server_requests_wait(live_server)
    decided_for(shop, anonymous_id)
    assert CampaignDecision.objects.filter(campaign=campaign, is_holdout=False).exists()

    page.goto(f"{live_server.url}/store/{shop.write_key}/cart/")
    page.wait_for_function("() => window.clickserver && clickserver.loaded")
    page.wait_for_timeout(2500)
    page.evaluate("clickserver.flush()")
    page.wait_for_timeout(500)

    assert page.query_selector("[role=status]") is None
    assert not Event.objects.filter(
        shop=shop, type__in=["experiment_exposure", "notification_shown"]
    ).exists()


@pytest.mark.browser
@pytest.mark.urls("events.tests.storefront_urls")
@pytest.mark.django_db(transaction=True)
def test_the_click_and_the_purchase_after_it_are_attributed_to_the_arm(
    context, live_server, shop, user, process_all
):
    campaign = campaign_running(shop)
    (anonymous_id,) = anonymous_ids_in(campaign, "nudge", 1)
    decided_for(shop, anonymous_id)
    decision = CampaignDecision.objects.get()
    context.add_cookies([{"name": "_cs_aid", "value": anonymous_id, "url": live_server.url}])
    page = context.new_page()

    page.goto(f"{live_server.url}/store/{shop.write_key}/home/")
    page.wait_for_selector("[role=status]", timeout=15000)
    page.click("[role=status] a")
    clicked = events_of(shop, {"notification_clicked"}, 1)
    page.goto(f"{live_server.url}/store/{shop.write_key}/thanks/")
    page.wait_for_function("() => window.clickserver && clickserver.loaded")
    page.evaluate("clickserver.flush()")
    bought = events_of(shop, {"purchase"}, 1)
    # The purchase's request runs the pipeline inline (eager) after storing the event: let it
    # finish before processing and computing here, or the order may not be committed yet.
    live_server_requests_wait(live_server)
    process_all(shop)
    # Folds the exposures; the result is computed here whatever the inline follow-ups of the
    # click's request computed before the purchase (a running result is fresh for 5 minutes).
    experiments_refresh(shop_id=shop.pk, now=timezone.now())
    campaign.refresh_from_db()
    experiment_results_compute(experiment=campaign.experiment, now=timezone.now())
    client = APIClient()
    client.force_authenticate(user=user)
    answer = client.get(f"/notifications/campaigns/{campaign.pk}/results/?shop={shop.domain}")

    arms = {arm["arm"]: arm for arm in answer.json()["arms"]}
    assert [e.properties["decision"] for e in clicked] == [decision.pk]
    assert [(e.anonymous_id, e.order_id) for e in bought] == [(anonymous_id, "5001")]
    assert answer.status_code == 200
    assert {
        key: (a["decisions"], a["shown"], a["clicked"], a["units"], a["conversions"])
        for key, a in arms.items()
    } == {"holdout": (0, 0, 0, 0, 0), "nudge": (1, 1, 1, 1, 1)}
    assert arms["nudge"]["net_revenue"] == pytest.approx(25.0)
