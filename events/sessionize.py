"""Sessionisation rules (SPEC.md "Session"), pure: no database, no clock.

A person's events are ordered by `(occurred_at, id)`. A new session starts when the gap since the
previous event is more than the shop's timeout (strictly: a gap of exactly the timeout stays in
the session) or when the event is 24 hours or more after the session's first event (sessions are
half-open `[start, start + 24 h)`).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache

from ua_parser import parse as parse_user_agent

MAX_SESSION_LENGTH = timedelta(hours=24)
PAGEVIEW_TYPES = frozenset({"page_view", "screen_view"})
PURCHASE_TYPE = "purchase"
# Events a page sends without the shopper doing anything (an experiment's variant being shown):
# they are part of the session but do not end a bounce, or every visit to a page under test would
# stop being one and the bounce rate would fall the day an experiment starts.
# A toast being shown is not the shopper doing anything (docs/campaigns.md).
NON_INTERACTION_TYPES = frozenset({"experiment_exposure", "notification_shown"})
TABLET_HINTS = ("ipad", "tablet", "kindle", "silk/", "playbook", "nexus 7", "nexus 9", "sm-t")
MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Firefox OS"})


class DeviceClass:
    DESKTOP = "desktop"
    MOBILE = "mobile"
    TABLET = "tablet"
    BOT = "bot"


@dataclass(slots=True)
class EventRow:
    """The fields of one event that sessionisation reads."""

    id: int
    occurred_at: datetime
    type: str = "page_view"
    url: str = ""
    referrer: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    user_agent: str = ""
    country: str = ""
    revenue: Decimal | None = None
    session_id: int | None = None
    person_id: int | None = None


@dataclass(slots=True)
class SessionData:
    started_at: datetime
    ended_at: datetime
    duration_seconds: int
    event_count: int
    pageview_count: int
    entry_url: str
    exit_url: str
    referrer: str
    utm_source: str
    utm_medium: str
    utm_campaign: str
    device: str
    browser: str
    os: str
    country: str
    is_converted: bool
    revenue: Decimal
    is_bounce: bool
    event_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Device:
    device: str
    browser: str
    os: str


def order_key(event: EventRow) -> tuple[datetime, int]:
    return (event.occurred_at, event.id)


def split_sessions(
    events: Sequence[EventRow],
    *,
    timeout: timedelta,
    max_length: timedelta = MAX_SESSION_LENGTH,
) -> list[list[EventRow]]:
    """Group one person's events, already ordered by `(occurred_at, id)`, into sessions."""
    sessions: list[list[EventRow]] = []
    current: list[EventRow] = []
    started_at = previous_at = None
    for event in events:
        if (
            current
            and started_at is not None
            and previous_at is not None
            and (
                event.occurred_at - previous_at > timeout
                or event.occurred_at - started_at >= max_length
            )
        ):
            sessions.append(current)
            current = []
        if not current:
            started_at = event.occurred_at
        current.append(event)
        previous_at = event.occurred_at
    if current:
        sessions.append(current)
    return sessions


@lru_cache(maxsize=4096)
def device_from_user_agent(user_agent: str) -> Device:
    """Device class, browser and OS family; the parser costs ~1 ms, so results are cached."""
    if not user_agent:
        return Device(device="", browser="", os="")
    result = parse_user_agent(user_agent)
    browser = result.user_agent.family if result.user_agent else ""
    os_family = result.os.family if result.os else ""
    device_family = result.device.family if result.device else ""
    lowered = user_agent.lower()
    if device_family == "Spider" or "bot" in lowered or "spider" in lowered or "crawl" in lowered:
        device = DeviceClass.BOT
    elif any(hint in lowered for hint in TABLET_HINTS) or (
        os_family == "Android" and "mobile" not in lowered
    ):
        device = DeviceClass.TABLET
    elif os_family in MOBILE_OS or "mobile" in lowered:
        device = DeviceClass.MOBILE
    else:
        device = DeviceClass.DESKTOP
    return Device(device=device, browser=browser[:64], os=os_family[:64])


def _first(values: Iterable[str]) -> str:
    return next((value for value in values if value), "")


def session_summarize(events: Sequence[EventRow]) -> SessionData:
    """The attributes of one session from its events, ordered by `(occurred_at, id)`."""
    first, last = events[0], events[-1]
    urls = [event.url for event in events if event.url]
    purchases = [event for event in events if event.type == PURCHASE_TYPE]
    device = device_from_user_agent(_first(event.user_agent for event in events))
    return SessionData(
        started_at=first.occurred_at,
        ended_at=last.occurred_at,
        duration_seconds=int((last.occurred_at - first.occurred_at).total_seconds()),
        event_count=len(events),
        pageview_count=sum(1 for event in events if event.type in PAGEVIEW_TYPES),
        entry_url=urls[0] if urls else "",
        exit_url=urls[-1] if urls else "",
        # UTM and referrer describe how the visit began, so they come from its first event.
        referrer=first.referrer,
        utm_source=first.utm_source,
        utm_medium=first.utm_medium,
        utm_campaign=first.utm_campaign,
        device=device.device,
        browser=device.browser,
        os=device.os,
        country=_first(event.country for event in events),
        is_converted=bool(purchases),
        revenue=sum((event.revenue or Decimal(0) for event in purchases), Decimal(0)),
        is_bounce=sum(1 for event in events if event.type not in NON_INTERACTION_TYPES) <= 1,
        event_ids=[event.id for event in events],
    )


def sessionize(
    events: Sequence[EventRow], *, timeout: timedelta, max_length: timedelta = MAX_SESSION_LENGTH
) -> list[SessionData]:
    """Split one person's ordered events into sessions and summarise each."""
    return [
        session_summarize(group)
        for group in split_sessions(events, timeout=timeout, max_length=max_length)
    ]
