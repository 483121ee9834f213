"""Bots in real headless Chromium: a browser that announces itself as headless (Chromium's
default user agent in headless mode says `HeadlessChrome`) is tagged by detection; the same
storefront visited by a browser with a normal Chrome user agent at a person's pace is not."""

import time

import pytest
from django.utils import timezone

from analytics.models import BotTag
from analytics.services.detection import anomalies_detect
from events.models import Event
from events.tests import storefront_urls

pytestmark = [
    pytest.mark.browser,
    pytest.mark.urls("events.tests.storefront_urls"),
    pytest.mark.django_db(transaction=True),
]

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


def visit(context, url: str) -> str:
    """Home, then a product, as a shopper does; the browser's own user agent string."""
    page = context.new_page()
    page.goto(url("home"))
    page.wait_for_timeout(300)
    page.click("#to-product")
    page.wait_for_load_state()
    page.evaluate("() => clickserver.flush()")
    agent = page.evaluate("() => navigator.userAgent")
    page.close()
    return agent


def test_headless_chromium_is_tagged_and_a_person_in_chrome_is_not(
    browser, celery_eager, live_server, shop, process_all
):
    storefront_urls.cart_attributes.clear()

    def url(page: str) -> str:
        return f"{live_server.url}/store/{shop.write_key}/{page}/"

    headless = browser.new_context()
    person = browser.new_context(user_agent=CHROME)
    try:
        headless_agent = visit(headless, url)
        person_agent = visit(person, url)
    finally:
        headless.close()
        person.close()
    deadline = time.monotonic() + 12
    while Event.objects.filter(shop=shop).count() < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    process_all(shop)

    anomalies_detect(shop_id=shop.pk, now=timezone.now())

    assert "HeadlessChrome" in headless_agent
    assert "Headless" not in person_agent
    events = Event.objects.filter(shop=shop)
    headless_people = set(
        events.filter(user_agent=headless_agent).values_list("person_id", flat=True)
    )
    person_people = set(events.filter(user_agent=person_agent).values_list("person_id", flat=True))
    assert len(headless_people) == len(person_people) == 1
    tags = {tag.person_id: tag for tag in BotTag.objects.filter(shop=shop)}
    assert set(tags) == headless_people
    assert tags[headless_people.pop()].reasons == ["bot_user_agent"]
