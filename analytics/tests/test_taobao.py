"""Taobao head (814 users) through import_events, process_events and the rollups, against pandas.

pandas sessionizes independently (SPEC: a gap over 30 minutes or 24 hours of length starts a new
session) and computes funnel levels per unit with the earliest-chain rule, which is the deepest
chain when the window does not bind (all events lie within 9 days, the person window is 14).
"""

import io

import pandas as pd
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from conftest import SHARED_DATA
from events.tests.factories import ShopFactory, UserFactory

PATH = SHARED_DATA / "clickstream" / "taobao_userbehavior" / "UserBehavior_head_814users.csv"
TYPES = {"pv": "product_view", "cart": "add_to_cart", "fav": "add_to_wishlist", "buy": "purchase"}
START, END = "2017-11-25", "2017-12-03"
TIMEOUT = pd.Timedelta(minutes=30)
MAX_LENGTH = pd.Timedelta(hours=24)


@pytest.fixture(scope="module")
def taobao(django_db_setup, django_db_blocker):
    if not PATH.is_file():
        pytest.skip(f"Taobao head not found at {PATH}")
    with django_db_blocker.unblock():
        user = UserFactory()
        shop = ShopFactory(owner=user, timezone="UTC")
        quiet = {"stdout": io.StringIO(), "stderr": io.StringIO()}
        call_command("import_events", str(PATH), shop=shop.domain, format="taobao", **quiet)
        # The user's path: no rebuild, no beat; process_events leaves the rollups current.
        call_command("process_events", shop=shop.domain, **quiet)
    client = APIClient()
    client.force_authenticate(user=user)
    yield shop, client
    with django_db_blocker.unblock():
        shop.delete()
        user.delete()


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Every event with its pandas session number and the session's start."""
    if not PATH.is_file():
        pytest.skip(f"Taobao head not found at {PATH}")
    df = pd.read_csv(PATH, dtype={"user_id": str})
    df["at"] = pd.to_datetime(df["timestamp"], unit="s", utc=True)
    df["type"] = df["behavior_type"].map(TYPES)
    df = df.sort_values(["user_id", "at"], kind="stable").reset_index(drop=True)
    session_ids, starts = [], []
    number = 0
    for _, group in df.groupby("user_id", sort=False):
        started = previous = None
        for at in group["at"]:
            if started is None or at - previous > TIMEOUT or at - started >= MAX_LENGTH:
                number += 1
                started = at
            session_ids.append(number)
            starts.append(started)
            previous = at
    df["session"] = session_ids
    df["started_at"] = starts
    return df


def in_days(series: pd.Series, start: str, end: str) -> pd.Series:
    day = series.dt.strftime("%Y-%m-%d")
    return (day >= start) & (day <= end)


def levels(events: pd.DataFrame, key: str, starts: pd.Series) -> list[int]:
    """Deepest level of product_view → add_to_cart → purchase per unit (earliest chain).

    Plain Python over each unit's rows: pandas selections per unit took 20 s for the sessions."""
    units: dict = {}
    for unit, kind, at, may_start in zip(
        events[key], events["type"], events["at"], starts.loc[events.index], strict=True
    ):
        units.setdefault(unit, []).append((kind, at, may_start))
    counts = [0, 0, 0]
    for rows in units.values():
        views = [at for kind, at, may_start in rows if kind == "product_view" and may_start]
        if not views:
            continue
        level, t = 1, min(views)
        for step in ("add_to_cart", "purchase"):
            later = [at for kind, at, _ in rows if kind == step and at >= t]
            if not later:
                break
            level, t = level + 1, min(later)
        for k in range(level):
            counts[k] += 1
    return counts


@pytest.mark.django_db
@pytest.mark.parametrize(("start", "end"), [(START, END), ("2017-11-28", "2017-11-28")])
def test_counts_and_conversion_match_pandas(taobao, frame, start, end):
    shop, client = taobao
    query = f"shop={shop.domain}&start={start}&end={end}"

    sessions = client.get(f"/analytics/session_count/?{query}").json()
    users = client.get(f"/analytics/user_count/?{query}").json()
    conversion = client.get(f"/analytics/visit_conversion/?{query}").json()

    started = frame[in_days(frame["started_at"], start, end)]
    converted = started.loc[started["type"] == "purchase", "session"].nunique()
    assert sessions["session_count"] == started["session"].nunique()
    assert users["user_count"] == frame.loc[in_days(frame["at"], start, end), "user_id"].nunique()
    assert (conversion["sessions"], conversion["converted_sessions"]) == (
        started["session"].nunique(),
        converted,
    )
    assert conversion["rate"] == round(converted / started["session"].nunique(), 6)


@pytest.mark.django_db
def test_session_funnel_matches_pandas(taobao, frame):
    shop, client = taobao

    body = client.get(
        f"/analytics/funnel/?shop={shop.domain}&start={START}&end={END}"
        "&steps=product_view,add_to_cart,purchase&unit=session"
    ).json()

    started = frame[in_days(frame["started_at"], START, END)]
    always = pd.Series(True, index=frame.index)
    assert [s["count"] for s in body["steps"]] == levels(started, "session", always)


@pytest.mark.django_db
def test_person_funnel_matches_pandas(taobao, frame):
    shop, client = taobao

    body = client.get(
        f"/analytics/funnel/?shop={shop.domain}&start={START}&end={END}"
        "&steps=product_view,add_to_cart,purchase&unit=person"
    ).json()

    from_start = frame[frame["at"] >= pd.Timestamp(START, tz="UTC")]
    assert [s["count"] for s in body["steps"]] == levels(
        from_start, "user_id", in_days(frame["at"], START, END)
    )
