"""Real data through import_events and process_events, checked against pandas (SPEC.md rule)."""

import io
from datetime import timedelta

import pandas as pd
import pytest
from django.core.management import call_command

from events.models import Event, Person, Session
from events.validation import JUNK_IDS

TIMEOUT = timedelta(minutes=30)
MAX_LENGTH = timedelta(hours=24)


def expected_counts(frame: pd.DataFrame) -> tuple[int, int, int]:
    """(persons, sessions, sessions with a purchase) from columns user_id, at, is_purchase."""
    frame = frame[~frame["user_id"].str.strip().str.lower().isin(JUNK_IDS)]
    frame = frame.sort_values(["user_id", "at"], kind="stable")
    sessions = converted = 0
    for _, group in frame.groupby("user_id", sort=False):
        started = previous = None
        has_purchase = False
        for at, is_purchase in zip(group["at"], group["is_purchase"], strict=True):
            if started is None or at - previous > TIMEOUT or at - started >= MAX_LENGTH:
                sessions += 1
                converted += has_purchase
                started, has_purchase = at, False
            has_purchase = has_purchase or bool(is_purchase)
            previous = at
        converted += has_purchase
    return frame["user_id"].nunique(), sessions, converted


def import_and_process(shop, path, fmt: str) -> None:
    call_command("import_events", str(path), shop=shop.domain, format=fmt, stdout=io.StringIO())
    call_command("process_events", shop=shop.domain, stdout=io.StringIO())


def actual_counts(shop) -> tuple[int, int, int]:
    sessions = Session.objects.filter(shop=shop)
    return (
        Person.objects.filter(shop=shop).count(),
        sessions.count(),
        sessions.filter(is_converted=True).count(),
    )


@pytest.mark.slow
@pytest.mark.django_db
def test_taobao_sessions_equal_pandas(shop, shared_data):
    path = shared_data / "clickstream/taobao_userbehavior/UserBehavior_head_814users.csv"
    frame = pd.read_csv(path, dtype={"user_id": str})
    frame["at"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True)
    frame["is_purchase"] = frame["behavior_type"] == "buy"

    import_and_process(shop, path, "taobao")

    assert Event.objects.filter(shop=shop).count() == len(frame)
    assert not Event.objects.filter(shop=shop, session__isnull=True).exists()
    assert actual_counts(shop) == expected_counts(frame)


@pytest.mark.slow
@pytest.mark.django_db
def test_rees46_sessions_equal_pandas_not_user_session(shop, shared_data):
    path = shared_data / "clickstream/rees46_multicategory/2019-Oct_head.csv"
    frame = pd.read_csv(path, dtype={"user_id": str})
    frame["at"] = pd.to_datetime(frame["event_time"].str.replace(" UTC", ""), utc=True)
    frame["is_purchase"] = frame["event_type"] == "purchase"

    import_and_process(shop, path, "rees46")

    assert Event.objects.filter(shop=shop).count() == len(frame)
    assert actual_counts(shop) == expected_counts(frame)
    # Sessions follow our rule, not the file's own user_session column.
    assert Session.objects.filter(shop=shop).count() != frame["user_session"].nunique()
