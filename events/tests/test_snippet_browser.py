"""The snippet in real headless Chromium, against a live server and MariaDB.

The storefront pages come from events/tests/storefront_urls.py, registered only here.
"""

import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from conftest import live_server_requests_wait
from events.models import ConsentMode, Event, Order, Person, Session
from events.tests import storefront_urls

pytestmark = [
    pytest.mark.browser,
    pytest.mark.urls("events.tests.storefront_urls"),
    pytest.mark.django_db(transaction=True),
]

DNT_SCRIPT = "Object.defineProperty(Navigator.prototype, 'doNotTrack', {get: () => '1'});"


@pytest.fixture
def context(browser, celery_eager, live_server):
    storefront_urls.cart_attributes.clear()
    context = browser.new_context()
    yield context
    context.close()
    live_server_requests_wait(live_server)


@pytest.fixture
def store(live_server, shop):
    def url(page: str) -> str:
        return f"{live_server.url}/store/{shop.write_key}/{page}/"

    return url


def wait_for_events(shop, count: int, *, timeout: float = 12.0) -> list[Event]:
    deadline = time.monotonic() + timeout
    while True:
        events = list(Event.objects.filter(shop=shop).order_by("occurred_at", "id"))
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def storage(page) -> dict:
    return page.evaluate(
        "() => ({cookies: document.cookie, local: Object.keys(localStorage),"
        " session: Object.keys(sessionStorage)})"
    )


def test_shopper_journey_lands_in_order_with_one_anonymous_id(context, store, shop, process_all):
    page = context.new_page()

    page.goto(store("home") + "?utm_source=news&utm_medium=email&utm_campaign=spring")
    page.click("#to-product")
    page.wait_for_load_state()
    # A shopper looks before clicking. Events sent in different requests are ordered by their
    # skew-corrected times (received_at - (sent_at - timestamp)), which carry each request's
    # transit time: a click milliseconds after the page load could land before the view.
    page.wait_for_timeout(200)
    page.click("#add")
    page.wait_for_function("() => document.cookie.includes('_cs_aid')")
    page.wait_for_timeout(300)
    page.goto(store("cart"))
    page.click("#checkout")
    page.wait_for_load_state()
    page.evaluate("() => clickserver.flush()")
    events = wait_for_events(shop, 8)

    assert [e.type for e in events] == [
        "page_view",
        "page_view",
        "product_view",
        "add_to_cart",
        "page_view",
        "checkout_started",
        "page_view",
        "purchase",
    ]
    anonymous_id = page.evaluate("() => clickserver.anonymousId()")
    assert {e.anonymous_id for e in events} == {anonymous_id}
    assert len(anonymous_id) == 36
    home, product_page, product_view, add, cart, checkout, _thanks, purchase = events
    assert (home.utm_source, home.utm_medium, home.utm_campaign) == ("news", "email", "spring")
    # The visit's campaign stays with its later pages.
    assert product_page.utm_source == "news"
    assert home.title == "Home - Test shop"
    assert product_page.referrer == home.url
    assert home.properties["screen"] == "1280x720"
    assert home.properties["language"]
    assert home.user_agent.startswith("Mozilla/5.0")
    assert (product_view.product_id, product_view.product_name, product_view.product_price) == (
        "42",
        "Mug",
        Decimal("12.50"),
    )
    assert product_view.product_category == "Kitchen"
    assert (add.product_id, add.product_name, add.product_price, add.product_quantity) == (
        "42",
        "Mug",
        Decimal("12.50"),
        2,
    )
    assert checkout.url == cart.url
    assert (purchase.event_id, purchase.order_id, purchase.revenue, purchase.currency) == (
        "shopify-order-5001",
        "5001",
        Decimal("25.00"),
        "USD",
    )
    assert storefront_urls.cart_attributes == {"_clickserver_anonymous_id": anonymous_id}
    process_all(shop)
    assignments = set(Event.objects.filter(shop=shop).values_list("session_id", "person_id"))
    assert len(assignments) == 1
    session = Session.objects.get(shop=shop)
    assert (session.event_count, session.is_converted, session.revenue) == (
        8,
        True,
        Decimal("25.00"),
    )
    assert session.utm_source == "news"


def test_shopify_order_webhook_joins_the_browsers_anonymous_id(
    context, store, shop, shopify_client, django_capture_on_commit_callbacks, process_all
):
    page = context.new_page()
    page.goto(store("product"))
    page.wait_for_function("() => document.cookie.includes('_cs_aid')")
    anonymous_id = page.evaluate("() => clickserver.anonymousId()")
    page.wait_for_function("() => localStorage.getItem('_cs_cart') !== null")
    attribute = storefront_urls.cart_attributes["_clickserver_anonymous_id"]
    order = {
        "id": 9007199254740993,
        "created_at": "2026-04-01T10:00:00Z",
        "currency": "USD",
        "total_price": "25.00",
        "email": "shopper@example.com",
        "customer": {"id": 7001, "email": "shopper@example.com"},
        "note_attributes": [{"name": "_clickserver_anonymous_id", "value": attribute}],
        "line_items": [{"product_id": 42, "quantity": 2, "price": "12.50", "name": "Mug"}],
    }

    response = shopify_client.post("orders/create", order, webhook_id="browser-join-1")
    wait_for_events(shop, 3)

    assert response.status_code == 200
    assert attribute == anonymous_id
    purchase = Event.objects.get(shop=shop, type="purchase")
    assert purchase.event_id == "shopify-order-9007199254740993"
    assert purchase.anonymous_id == anonymous_id
    assert Order.objects.get(shop=shop).anonymous_id == anonymous_id
    browser_events = Event.objects.filter(shop=shop).exclude(type="purchase")
    assert {e.anonymous_id for e in browser_events} == {anonymous_id}
    process_all(shop)
    person = Person.objects.get(shop=shop)
    assert set(Event.objects.filter(shop=shop).values_list("person_id", flat=True)) == {person.pk}
    assert set(person.identifiers.values_list("kind", "value")) >= {
        ("anonymous_id", anonymous_id),
        ("shopify_customer", "7001"),
    }


def test_do_not_track_sends_and_stores_nothing(context, store, shop):
    context.add_init_script(DNT_SCRIPT)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    page.goto(store("product"))
    page.click("#add")
    page.click("#add-button")
    page.evaluate("() => { clickserver.track('custom', {a: 1}); clickserver.flush(); }")
    page.goto(store("thanks"))
    page.wait_for_timeout(1500)

    assert not [u for u in requests if "/events/" in u or "/cart/update.js" in u]
    assert Event.objects.count() == 0
    assert "_cs_" not in str(storage(page))
    assert page.evaluate("() => clickserver.anonymousId()") is None


def test_consent_mode_waits_for_consent(context, store, shop):
    shop.consent_mode = ConsentMode.REQUIRED
    shop.save()
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    page.goto(store("product"))
    page.click("#add-button")
    page.evaluate("() => clickserver.flush()")
    page.wait_for_timeout(1000)
    before = (list(requests), storage(page), Event.objects.count())
    page.evaluate("() => clickserver.consent(true)")
    page.click("#add-button")
    page.evaluate("() => clickserver.flush()")
    events = wait_for_events(shop, 3)

    assert not [u for u in before[0] if "/events/" in u or "/cart/" in u]
    assert "_cs_" not in str(before[1])
    assert before[2] == 0
    assert [e.type for e in events] == ["page_view", "product_view", "add_to_cart"]
    assert events[2].product_quantity == 3
    assert "_cs_aid" in storage(page)["cookies"]


def test_consent_withdrawn_erases_browser_state(context, store, shop):
    shop.consent_mode = ConsentMode.REQUIRED
    shop.save()
    page = context.new_page()
    page.goto(store("home"))
    page.evaluate("() => clickserver.consent(true)")
    wait_for_events(shop, 1)

    page.evaluate("() => clickserver.consent(false)")
    page.goto(store("product"))
    page.wait_for_timeout(800)

    assert "_cs_" not in str(storage(page))
    assert [e.type for e in Event.objects.filter(shop=shop)] == ["page_view"]


def test_offline_then_online_delivers_every_event_exactly_once(context, store, shop):
    page = context.new_page()
    page.goto(store("product"))
    wait_for_events(shop, 2)

    context.set_offline(True)
    page.click("#add-button")
    page.evaluate("() => clickserver.track('wishlist_add', {sku: '42'})")
    page.evaluate("() => clickserver.flush()")
    page.wait_for_timeout(1000)
    queued = page.evaluate("() => JSON.parse(localStorage.getItem('_cs_queue')).length")
    stored_while_offline = Event.objects.count()
    context.set_offline(False)
    events = wait_for_events(shop, 4)
    # A second send of the same queue (a beacon's resend) must not store anything twice.
    page.evaluate(
        "(ids) => fetch('/events/', {method: 'POST', headers: {'Content-Type': 'text/plain'},"
        " body: JSON.stringify({write_key: ids.key, batch: ids.batch})})",
        {
            "key": shop.write_key,
            "batch": [
                {"event_id": e.event_id, "type": e.type, "anonymous_id": e.anonymous_id}
                for e in Event.objects.filter(shop=shop)
            ],
        },
    )
    page.wait_for_timeout(500)

    assert (queued, stored_while_offline) == (2, 2)
    assert [e.type for e in events] == ["page_view", "product_view", "add_to_cart", "wishlist_add"]
    assert Event.objects.filter(shop=shop).count() == 4
    assert page.evaluate("() => JSON.parse(localStorage.getItem('_cs_queue')).length") == 0


def test_spa_navigation_json_ld_xhr_identify_and_order_element(context, store, shop):
    page = context.new_page()
    page.goto(store("jsonld"))
    page.evaluate("() => history.pushState({}, '', '?tab=reviews')")
    page.evaluate("() => history.replaceState({}, '', '?tab=reviews')")  # same URL: no view
    page.evaluate("() => clickserver.identify('user-9', {plan: 'gold'})")
    page.goto(store("product"))
    page.click("#add-xhr")
    page.wait_for_timeout(300)
    page.goto(store("order"))
    page.reload()  # the confirmation page again: no second purchase
    page.evaluate("() => clickserver.flush()")
    events = wait_for_events(shop, 11)

    assert [e.type for e in events] == [
        "page_view",
        "product_view",
        # An SPA navigation is a page view, and the page still shows a product.
        "page_view",
        "product_view",
        "identify",
        "page_view",
        "product_view",
        "add_to_cart",
        "page_view",
        "purchase",
        "page_view",
    ]
    lamp = events[1]
    assert (lamp.product_id, lamp.product_name, lamp.product_category, lamp.product_price) == (
        "LD-1",
        "Lamp",
        "Home",
        Decimal("30.00"),
    )
    assert events[2].url.endswith("?tab=reviews")
    assert events[2].referrer == events[0].url
    assert events[4].user_id == "user-9"
    assert events[4].properties["traits"] == {"plan": "gold"}
    assert events[5].user_id == "user-9"
    assert (events[7].product_id, events[7].product_quantity) == ("42", 1)
    purchase = events[9]
    assert (purchase.order_id, purchase.revenue, purchase.currency) == (
        "A-77",
        Decimal("99.90"),
        "EUR",
    )
    assert len(purchase.event_id) == 36
    assert datetime.now(UTC) >= purchase.occurred_at


def test_recommendations_send_the_key_in_a_header_and_the_browsers_own_id(
    context, store, shop, process_all
):
    page = context.new_page()
    requests = []
    page.on("request", lambda request: requests.append(request))
    page.goto(store("product"))
    page.wait_for_function("() => document.cookie.includes('_cs_aid')")
    page.evaluate("() => clickserver.flush()")
    wait_for_events(shop, 2)
    process_all(shop)

    products = page.evaluate("() => clickserver.recommendations('pick_up_where_you_left_off')")
    stranger = page.evaluate(
        "() => clickserver.recommendations('pick_up_where_you_left_off', {userId: 'u-9'})"
    )

    assert [(p["product_id"], p["name"], p["reason"]) for p in products] == [
        ("42", "Mug", "viewed")
    ]
    # A user id without the shop's identity token is not sent at all, so nothing comes back
    # that the anonymous id would not also give.
    assert [p["product_id"] for p in stranger] == ["42"]
    anonymous_id = page.evaluate("() => clickserver.anonymousId()")
    calls = [r for r in requests if "/api/pick_up_where_you_left_off/" in r.url]
    assert [r.url.split("?", 1)[1] for r in calls] == [f"limit=10&anonymous_id={anonymous_id}"] * 2
    assert {r.headers["x-write-key"] for r in calls} == {shop.write_key}


def test_a_batch_the_server_keeps_failing_is_split_and_only_the_poison_event_dropped(
    context, store, shop
):
    page = context.new_page()
    warnings: list[str] = []
    page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    poisoned = {"requests": 0}

    def answer_500_to_the_poison(route):
        if '"type":"poison"' in (route.request.post_data or ""):
            poisoned["requests"] += 1
            route.fulfill(status=500, body="{}", content_type="application/json")
        else:
            route.continue_()

    page.route("**/events/", answer_500_to_the_poison)
    page.goto(store("product"))
    wait_for_events(shop, 2)
    page.evaluate(
        "() => { clickserver.track('before'); clickserver.track('poison');"
        " clickserver.track('after'); }"
    )
    # Each flush is one try; calling it skips the backoff's waits (which the timer keeps).
    for _ in range(40):
        page.evaluate("() => clickserver.flush()")
        page.wait_for_timeout(150)
        if page.evaluate("() => JSON.parse(localStorage.getItem('_cs_queue')).length") == 0:
            break
    events = wait_for_events(shop, 4)

    # "before" and "after" went in separate requests: their clock-corrected times may swap.
    assert sorted(e.type for e in events) == ["after", "before", "page_view", "product_view"]
    assert poisoned["requests"] == 3 + 3 + 3  # three tries of 3 events, then of 2, then of 1
    assert [w for w in warnings if w.startswith("clickserver:")] == [
        "clickserver: dropped event poison after 3 server errors"
    ]
