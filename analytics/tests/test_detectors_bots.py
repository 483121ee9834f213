"""Bots and hyperactive users (pure: no database; the Taobao slice when present)."""

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from analytics.detectors.bots import (
    BOT_USER_AGENT,
    BURST,
    FAST_PAGES,
    HYPERACTIVE,
    SHARED_NETWORK,
    events_detect_bots,
    user_agent_bot_match,
)
from analytics.detectors.findings import Severity
from conftest import SHARED_DATA
from events.simulator import USER_AGENTS, Simulator

TAOBAO = SHARED_DATA / "clickstream" / "taobao_userbehavior"
END = datetime(2026, 3, 3, 15, tzinfo=UTC)
CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.6478.126 Safari/537.36"
)
# Playwright's and Puppeteer's headless Chromium announce themselves with this user agent.
HEADLESS = CHROME.replace("Chrome/", "HeadlessChrome/")


def simulated_events(*, visitors: int = 300, bot_agent: str | None = None) -> pd.DataFrame:
    """The demo simulator's visits over two days, then its anomalies (spike, whale, bot)."""
    simulator = Simulator(shop_domain="shop.example", seed=11, timezone="UTC")
    journeys = list(simulator.history(visitors=visitors, days=2, end=END - timedelta(hours=2)))
    journeys += list(simulator.anomalies(end=END))
    rows = [
        {
            "person_id": event["anonymous_id"],
            "session_id": f"s{number}",
            "occurred_at": event["timestamp"],
            "user_agent": event["context"]["user_agent"],
            "type": event["type"],
            "network": f"net-{number % 97}",
        }
        for number, journey in enumerate(journeys)
        for event in journey
    ]
    events = pd.DataFrame(rows)
    if bot_agent is not None:
        events.loc[events["user_agent"].str.contains("python-requests"), "user_agent"] = bot_agent
    return events


def visit(person: str, agent: str, *, gaps: list[int], start: datetime = END) -> list[dict]:
    at, rows = start, []
    for gap in [0, *gaps]:
        at += timedelta(seconds=gap)
        rows.append({"person_id": person, "session_id": f"{person}-1", "occurred_at": at,
                     "user_agent": agent, "type": "page_view"})  # fmt: skip
    return rows


def test_the_simulators_bot_is_tagged_and_its_humans_are_not():
    events = simulated_events()
    bot_id = events.loc[events["user_agent"].str.contains("python-requests"), "person_id"].iloc[0]

    people = [f for f in events_detect_bots(events) if f.entity == "person"]

    assert [f.entity_id for f in people] == [bot_id]
    [bot] = people
    assert [r.code for r in bot.reasons] == [BOT_USER_AGENT, HYPERACTIVE, FAST_PAGES]
    assert bot.severity == Severity.CRITICAL
    assert "is a known bot (python-requests)" in bot.explanation


def test_the_simulators_bot_is_caught_by_its_pace_under_a_normal_user_agent():
    events = simulated_events(bot_agent=USER_AGENTS[0])

    [bot] = [f for f in events_detect_bots(events) if f.entity == "person"]

    assert [r.code for r in bot.reasons] == [HYPERACTIVE, FAST_PAGES]


def test_headless_chrome_is_tagged_and_a_human_in_chrome_is_not():
    human_gaps = [35, 80, 22, 140, 61, 95, 40, 18, 120, 75, 52]
    events = pd.DataFrame(
        visit("headless", HEADLESS, gaps=human_gaps) + visit("human", CHROME, gaps=human_gaps)
    )

    findings = events_detect_bots(events)

    assert [(f.entity_id, [r.code for r in f.reasons]) for f in findings] == [
        ("headless", [BOT_USER_AGENT])
    ]
    assert findings[0].severity == Severity.WARNING
    assert findings[0].reasons[0].detail == (
        f"user agent {HEADLESS[:80]!r} is a known bot (Headless)"
    )


@pytest.mark.parametrize(
    ("agent", "is_bot"),
    [
        ("python-requests/2.32 (bot)", True),
        ("Googlebot/2.1 (+http://www.google.com/bot.html)", True),
        ("curl/8.4.0", True),
        (HEADLESS, True),
        (CHROME, False),
        (USER_AGENTS[1], False),  # iPhone Safari
        ("Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0", False),
        ("", False),
    ],
)
def test_user_agent_bot_match(agent, is_bot):
    assert bool(user_agent_bot_match(agent)) is is_bot


def test_a_burst_of_events_in_one_minute_is_tagged():
    events = pd.DataFrame(visit("clicker", CHROME, gaps=[1] * 40))

    [finding] = events_detect_bots(events)

    assert [(r.code, r.observed, r.limit) for r in finding.reasons] == [
        (BURST, 41.0, 30.0),
        (FAST_PAGES, 1.0, 6.0),
    ]


def test_many_sessions_from_one_network_name_the_network_not_its_people():
    rows = []
    for number in range(60):
        rows += visit(f"p{number}", CHROME, gaps=[40, 90], start=END + timedelta(minutes=number))
    events = pd.DataFrame(rows).assign(network="203.0.113.0")

    [finding] = events_detect_bots(events)

    assert (finding.entity, finding.entity_id) == ("network", "203.0.113.0")
    assert [(r.code, r.observed) for r in finding.reasons] == [(SHARED_NETWORK, 60.0)]
    assert finding.severity == Severity.INFO
    assert len(finding.session_ids) == 60
    assert finding.person_ids == tuple(sorted(f"p{number}" for number in range(60)))


def test_events_without_the_required_columns_are_refused():
    with pytest.raises(ValueError, match="occurred_at"):
        events_detect_bots(pd.DataFrame({"person_id": ["a"]}))


def test_taobao_shoppers_are_not_tagged_and_an_injected_bot_is():
    path = TAOBAO / "UserBehavior_timeslice_2017-11-26.csv.gz"
    if not path.is_file():
        pytest.skip(f"Taobao time slice not found at {path}")
    log = pd.read_csv(path)
    events = pd.DataFrame(
        {
            "person_id": log["user_id"].astype(str),
            "occurred_at": pd.to_datetime(log["timestamp"], unit="s", utc=True),
            "type": log["behavior_type"],
        }
    )
    start = events["occurred_at"].min().to_pydatetime()
    # 200 views 3 s apart: under the per-minute and per-hour limits, too fast to read.
    bot = pd.DataFrame(visit("injected-bot", "", gaps=[3] * 199, start=start))

    findings = events_detect_bots(pd.concat([events, bot.drop(columns="user_agent")]))

    assert [(f.entity_id, [r.code for r in f.reasons]) for f in findings] == [
        ("injected-bot", [FAST_PAGES])
    ]
