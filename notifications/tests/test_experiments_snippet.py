"""`clickserver.variant` in the storefront snippet: its configuration from the running experiments
(SNIPPET_CONFIG_HOOKS), and in headless Chromium the same assignment as the decide endpoint."""

import gzip
import time
from datetime import UTC, datetime

import orjson
import pytest
from rest_framework.test import APIClient

from events.models import ConsentMode, Event
from events.snippet import EXPERIMENTS_PLACEHOLDER, experiments_source
from events.storefront_auth import identity_token_compute
from events.tests import storefront_urls
from notifications.experiments import services
from notifications.experiments.rules import VariantIn
from segments.models import Segment

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 9, 9, 0, tzinfo=UTC)
KEY = "checkout-button"
VARIANTS = [
    VariantIn(key="control", weight=5, is_control=True),
    VariantIn(key="one-click", weight=3),
    VariantIn(key="express", weight=2),
]


def draft(shop, key=KEY, **overrides):
    arguments = {
        "shop": shop,
        "key": key,
        "name": key,
        "unit": "person",
        "primary_metric": {"kind": "conversion"},
        "variants": VARIANTS,
        "holdout_share": 0.1,
    } | overrides
    return services.experiment_create(**arguments)


def running(shop, key=KEY, **overrides):
    return services.experiment_start(experiment=draft(shop, key, **overrides), now=T0)


def snippet_config(body: str) -> dict:
    return orjson.loads(body.rsplit("(window, document, ", 1)[1].removesuffix(");\n"))


@pytest.mark.django_db
def test_the_snippet_carries_the_running_experiments_the_browser_can_decide(client, shop):
    running(shop, targeting={"device": ["mobile"], "source": ["News"]})
    running(shop, key="by-segment", targeting={"segment": Segment.objects.create(shop=shop).pk})
    running(shop, key="by-session", unit="session")
    draft(shop, key="not-yet")

    body = client.get(f"/snippet/{shop.write_key}.js").content.decode()

    assert snippet_config(body)["experiments"] == [
        {
            "key": KEY,
            "phase": 1,
            "holdout": 0.1,
            "variants": [["control", 0.5], ["one-click", 0.3], ["express", 0.2]],
            "targeting": {"device": ["mobile"], "source": ["news"]},
        }
    ]
    assert experiments_source() in body
    assert EXPERIMENTS_PLACEHOLDER not in body


@pytest.mark.django_db
def test_a_shop_without_browser_experiments_gets_the_plain_snippet(client, shop):
    running(shop, key="by-session", unit="session")

    body = client.get(f"/snippet/{shop.write_key}.js").content.decode()

    assert "experiments" not in snippet_config(body)
    assert EXPERIMENTS_PLACEHOLDER in body
    assert "bucket(" not in body


@pytest.mark.django_db
def test_the_snippet_with_experiments_is_at_most_8_kb_gzipped(client, shop):
    running(shop)

    body = client.get(f"/snippet/{shop.write_key}.js").content

    assert len(gzip.compress(body, compresslevel=9)) <= 8 * 1024


@pytest.mark.django_db
def test_the_snippet_keeps_its_experiments_while_redis_is_down(client, shop, redis_down):
    running(shop)

    response = client.get(f"/snippet/{shop.write_key}.js")

    assert response.status_code == 200
    assert [e["key"] for e in snippet_config(response.content.decode())["experiments"]] == [KEY]


@pytest.mark.django_db
def test_the_etag_changes_when_an_experiment_starts_and_stops(
    client, shop, django_capture_on_commit_callbacks
):
    url = f"/snippet/{shop.write_key}.js"
    before = client.get(url)["ETag"]
    with django_capture_on_commit_callbacks(execute=True):
        experiment = running(shop)
    started = client.get(url, headers={"If-None-Match": before})
    with django_capture_on_commit_callbacks(execute=True):
        services.experiment_stop(experiment=experiment, now=T1)

    stopped = client.get(url, headers={"If-None-Match": started["ETag"]})

    assert started.status_code == 200
    assert started["ETag"] != before
    assert (stopped.status_code, stopped["ETag"]) == (200, before)


# --- in headless Chromium --------------------------------------------------------------------


@pytest.fixture
def context(browser, celery_eager):
    storefront_urls.cart_attributes.clear()
    context = browser.new_context()
    yield context
    context.close()


@pytest.fixture
def home(live_server, shop):
    return f"{live_server.url}/store/{shop.write_key}/home/"


def wait_for_events(shop, count: int, *, timeout: float = 12.0) -> list[Event]:
    deadline = time.monotonic() + timeout
    while True:
        events = list(Event.objects.filter(shop=shop).order_by("occurred_at", "id"))
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


# Each id in turn as the browser's anonymous id (and, for "user:" ids, its logged-in user); the
# snippet reads both from storage at every call. `assign` records no exposure.
ASSIGN_ALL = """([key, ids]) => ids.map((id) => {
  const [kind, value] = id.split(':');
  document.cookie = '_cs_aid=' + (kind === 'anon' ? value : 'a-' + value) + '; Path=/';
  if (kind === 'user') localStorage.setItem('_cs_uid', value);
  else localStorage.removeItem('_cs_uid');
  return clickserver.assign(key);
})"""


@pytest.mark.browser
@pytest.mark.urls("events.tests.storefront_urls")
@pytest.mark.django_db(transaction=True)
def test_the_snippet_and_the_decide_endpoint_assign_the_same_variants(context, home, shop):
    running(shop)
    ids = [f"anon:visitor-{i}" for i in range(150)] + [f"user:customer-{i}" for i in range(50)]
    page = context.new_page()
    # Assignment needs no request: the page's own page_view is not even let through.
    page.route("**/events/", lambda route: route.abort())
    page.goto(home)
    page.wait_for_function("() => window.clickserver && clickserver.loaded")

    in_browser = page.evaluate(ASSIGN_ALL, [KEY, ids])
    by_endpoint = [decided(shop, unit_id) for unit_id in ids]

    assert in_browser == by_endpoint
    assert set(in_browser) == {None, "control", "one-click", "express"}
    assert not Event.objects.filter(shop=shop, type="experiment_exposure").exists()


def decided(shop, unit_id: str) -> str | None:
    kind, value = unit_id.split(":")
    params = {"anonymous_id": value if kind == "anon" else f"a-{value}"}
    headers = {"X-Write-Key": shop.write_key}
    if kind == "user":
        params["user_id"] = value
        headers["X-Identity-Token"] = identity_token_compute(shop=shop, user_id=value)
    response = APIClient().get("/experiments/decide/", params, headers=headers)
    return response.json()["experiments"][KEY]


@pytest.mark.browser
@pytest.mark.urls("events.tests.storefront_urls")
@pytest.mark.django_db(transaction=True)
def test_variant_records_one_exposure_per_page_view_through_ingestion(
    context, home, live_server, shop
):
    running(shop)
    running(shop, key="mobile-only", targeting={"device": ["mobile"]})
    # visitor-2 is in "one-click" (docs/experiments.md, the worked example).
    context.add_cookies([{"name": "_cs_aid", "value": "visitor-2", "url": live_server.url}])
    page = context.new_page()
    page.goto(home)
    page.wait_for_function("() => window.clickserver && clickserver.loaded")

    first = page.evaluate(
        f"() => [clickserver.variant('{KEY}'), clickserver.variant('{KEY}'),"
        " clickserver.variant('mobile-only'), clickserver.variant('no-such-test')]"
    )
    page.evaluate("() => history.pushState({}, '', '?step=2')")
    page.wait_for_timeout(100)
    second = page.evaluate(f"() => clickserver.variant('{KEY}')")
    page.evaluate("() => clickserver.flush()")
    events = wait_for_events(shop, 4)
    # The queue empties when the last response arrives, after the request's pipeline task.
    page.wait_for_function("() => JSON.parse(localStorage.getItem('_cs_queue')).length === 0")

    assert (first, second) == (["one-click", "one-click", None, None], "one-click")
    assert [e.type for e in events] == [
        "page_view",
        "experiment_exposure",
        "page_view",
        "experiment_exposure",
    ]
    exposures = [e for e in events if e.type == "experiment_exposure"]
    assert [
        {k: e.properties[k] for k in ("experiment", "variant", "phase")} for e in exposures
    ] == [{"experiment": KEY, "variant": "one-click", "phase": 1}] * 2
    assert {e.anonymous_id for e in exposures} == {"visitor-2"}
    assert [e.url.endswith("?step=2") for e in exposures] == [False, True]


@pytest.mark.browser
@pytest.mark.urls("events.tests.storefront_urls")
@pytest.mark.django_db(transaction=True)
def test_without_consent_variant_is_null_and_records_nothing(context, home, live_server, shop):
    shop.consent_mode = ConsentMode.REQUIRED
    shop.save()
    running(shop)
    context.add_cookies([{"name": "_cs_aid", "value": "visitor-2", "url": live_server.url}])
    page = context.new_page()
    page.goto(home)
    page.wait_for_function("() => window.clickserver && clickserver.loaded")

    before = page.evaluate(f"() => [clickserver.variant('{KEY}'), sessionStorage.length]")
    page.evaluate("() => clickserver.consent(true)")
    after = page.evaluate(f"() => clickserver.variant('{KEY}')")
    page.evaluate("() => clickserver.flush()")
    events = wait_for_events(shop, 2)
    page.wait_for_function("() => JSON.parse(localStorage.getItem('_cs_queue')).length === 0")
    kept = page.evaluate("() => sessionStorage.getItem('_cs_visitor')")
    page.evaluate("() => clickserver.consent(false)")
    withdrawn = page.evaluate(f"() => [clickserver.variant('{KEY}'), sessionStorage.length]")

    assert (before, after, kept, withdrawn) == ([None, 0], "one-click", "returning", [None, 0])
    assert [e.type for e in events] == ["page_view", "experiment_exposure"]


@pytest.mark.browser
@pytest.mark.urls("events.tests.storefront_urls")
@pytest.mark.django_db(transaction=True)
def test_browser_targeting_agrees_with_decide_given_the_same_traits(context, home, shop):
    targetings = {
        "from-news": {"source": ["news"]},
        "returning-only": {"visitor": "returning"},
        "desktop-only": {"device": ["desktop"]},
        "mobile-only": {"device": ["mobile", "tablet"]},
    }
    for key, targeting in targetings.items():
        running(shop, key=key, targeting=targeting, holdout_share=0.0)
    page = context.new_page()
    page.route("**/events/", lambda route: route.abort())
    page.goto(home + "?utm_source=News")
    page.wait_for_function("() => window.clickserver && clickserver.loaded")

    in_browser = page.evaluate("(keys) => keys.map((k) => clickserver.assign(k))", list(targetings))
    anonymous_id = page.evaluate("() => clickserver.anonymousId()")
    response = APIClient().get(
        "/experiments/decide/",
        {"anonymous_id": anonymous_id, "source": "news", "visitor": "new", "device": "desktop"},
        headers={"X-Write-Key": shop.write_key},
    )

    assert in_browser == [response.json()["experiments"][key] for key in targetings]
    assert [variant is not None for variant in in_browser] == [True, False, True, False]
