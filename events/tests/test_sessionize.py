from datetime import UTC, datetime, timedelta
from decimal import Decimal

from events.sessionize import EventRow, device_from_user_agent, sessionize, split_sessions

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
TIMEOUT = timedelta(minutes=30)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


def rows(*offsets: timedelta) -> list[EventRow]:
    return [EventRow(id=index, occurred_at=T0 + offset) for index, offset in enumerate(offsets)]


def sizes(groups) -> list[int]:
    return [len(group) for group in groups]


def test_gap_of_exactly_the_timeout_stays_in_the_session():
    events = rows(timedelta(0), timedelta(minutes=30))

    groups = split_sessions(events, timeout=TIMEOUT)

    assert sizes(groups) == [2]


def test_gap_of_the_timeout_plus_one_second_starts_a_new_session():
    events = rows(timedelta(0), timedelta(minutes=30, seconds=1))

    groups = split_sessions(events, timeout=TIMEOUT)

    assert sizes(groups) == [1, 1]


def test_session_is_cut_when_it_has_lasted_24_hours():
    # An event every 20 minutes for 25 hours: never idle, so only the 24 h cap splits it.
    events = rows(*(timedelta(minutes=20 * step) for step in range(76)))

    groups = split_sessions(events, timeout=TIMEOUT)

    assert sizes(groups) == [72, 4]
    assert groups[1][0].occurred_at == T0 + timedelta(hours=24)


def test_timeout_is_a_parameter():
    events = rows(timedelta(0), timedelta(minutes=10), timedelta(minutes=25))

    groups = split_sessions(events, timeout=timedelta(minutes=10))

    assert sizes(groups) == [2, 1]


def test_session_attributes():
    events = [
        EventRow(
            id=1,
            occurred_at=T0,
            url="https://shop.example/",
            referrer="https://google.com/",
            utm_source="google",
            utm_medium="cpc",
            utm_campaign="winter",
            user_agent=IPHONE,
        ),
        EventRow(id=2, occurred_at=T0 + timedelta(minutes=5), type="add_to_cart", country="DE"),
        EventRow(
            id=3,
            occurred_at=T0 + timedelta(minutes=9),
            type="purchase",
            url="https://shop.example/thanks",
            revenue=Decimal("42.50"),
            utm_source="newsletter",
        ),
        EventRow(id=4, occurred_at=T0 + timedelta(minutes=10), type="purchase"),
    ]

    [session] = sessionize(events, timeout=TIMEOUT)

    assert session.started_at == T0
    assert session.ended_at == T0 + timedelta(minutes=10)
    assert session.duration_seconds == 600
    assert session.event_count == 4
    assert session.pageview_count == 1
    assert session.entry_url == "https://shop.example/"
    assert session.exit_url == "https://shop.example/thanks"
    assert session.referrer == "https://google.com/"
    assert (session.utm_source, session.utm_medium, session.utm_campaign) == (
        "google",
        "cpc",
        "winter",
    )
    assert (session.device, session.browser, session.os) == ("mobile", "Mobile Safari", "iOS")
    assert session.country == "DE"
    assert session.is_converted is True
    assert session.revenue == Decimal("42.50")
    assert session.is_bounce is False
    assert session.event_ids == [1, 2, 3, 4]


def test_single_event_session_is_a_bounce_without_conversion():
    [session] = sessionize(rows(timedelta(0)), timeout=TIMEOUT)

    assert session.is_bounce is True
    assert session.is_converted is False
    assert session.revenue == Decimal(0)
    assert session.duration_seconds == 0


def test_device_classes():
    assert device_from_user_agent(WINDOWS_CHROME).device == "desktop"
    assert device_from_user_agent(WINDOWS_CHROME).browser == "Chrome"
    assert device_from_user_agent(IPHONE).device == "mobile"
    ipad = IPHONE.replace("iPhone; CPU iPhone OS", "iPad; CPU OS")
    assert device_from_user_agent(ipad).device == "tablet"
    bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    assert device_from_user_agent(bot).device == "bot"
    assert device_from_user_agent("").device == ""


def test_experiment_exposures_do_not_end_a_bounce():
    page = EventRow(id=1, occurred_at=T0, type="page_view")
    exposures = [
        EventRow(id=i, occurred_at=T0 + timedelta(seconds=i), type="experiment_exposure")
        for i in (2, 3)
    ]
    second_page = EventRow(id=4, occurred_at=T0 + timedelta(seconds=9), type="page_view")

    [bounce] = sessionize([page, *exposures], timeout=TIMEOUT)
    [engaged] = sessionize([page, *exposures, second_page], timeout=TIMEOUT)

    # Still part of the session's events, but not interactions.
    assert (bounce.event_count, bounce.is_bounce) == (3, True)
    assert (engaged.event_count, engaged.is_bounce) == (4, False)
