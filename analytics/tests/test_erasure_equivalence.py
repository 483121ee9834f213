"""Erasing a person leaves every answer equal to the answer on the same data without them.

A slice of the REES46 head, and one of the Taobao head, is imported into two shops the user's
way (`import_events`, then `process_events`): one with every row, one without the buyer to be
erased. `erase_person` then erases that buyer from the first shop, and every analytics, segment
and score endpoint must answer both shops alike. Person, session and segment ids differ between
the shops, so answers are compared with those ids replaced by what they stand for (a user id, a
segment key), and without the times at which derived rows were written.
"""

import csv
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from analytics.models import (
    DailyRollup,
    DailySessionPaths,
    DailyVisitors,
    HourlyRevenue,
    HourlyRollup,
)
from analytics.services.rollups import rollups_refresh
from conftest import SHARED_DATA
from events.models import ErasureRequest, Event, Order, Person, Session
from events.services import erasure
from events.services.ingest import events_insert
from events.tests.factories import ShopFactory, UserFactory, event_in

NOW = datetime(2026, 2, 1, tzinfo=UTC)
ROLLUP_MODELS = (HourlyRollup, DailyRollup, HourlyRevenue, DailyVisitors, DailySessionPaths)


@dataclass(frozen=True)
class Dataset:
    path: Path
    format: str
    rows: int
    user_column: int
    type_column: int
    purchase: str
    timezone: str
    period: str
    occurred_at: Callable[[list[str]], datetime]


DATASETS = {
    # Three hours of one morning, with prices: orders and revenue. In New York they are the
    # evening of 2019-09-30, so the erasure must find the days in the shop's zone.
    "rees46": Dataset(
        path=SHARED_DATA / "clickstream" / "rees46_multicategory" / "2019-Oct_head.csv",
        format="rees46",
        rows=4000,
        user_column=7,
        type_column=1,
        purchase="purchase",
        timezone="America/New_York",
        period="start=2019-09-30&end=2019-09-30",
        occurred_at=lambda row: datetime.fromisoformat(row[0].replace(" UTC", "+00:00")),
    ),
    # Whole histories of the first users, grouped by user: a buyer active on many days, so the
    # visitor bitmaps and paths of several days and weeks are recomputed.
    "taobao": Dataset(
        path=SHARED_DATA / "clickstream" / "taobao_userbehavior" / "UserBehavior_head_814users.csv",
        format="taobao",
        rows=3000,
        user_column=0,
        type_column=3,
        purchase="buy",
        timezone="Asia/Shanghai",
        period="start=2017-11-25&end=2017-12-03",
        occurred_at=lambda row: datetime.fromtimestamp(int(row[4]), tz=UTC),
    ),
}


def endpoints(period: str) -> list[str]:
    return [
        f"/analytics/session_count/?{period}",
        f"/analytics/user_count/?{period}",
        f"/analytics/visit_conversion/?{period}",
        f"/analytics/product_visits/?{period}",
        f"/analytics/funnel/?{period}&steps=product_view,add_to_cart,purchase&unit=session",
        f"/analytics/funnel/?{period}&steps=product_view,purchase&unit=person",
        f"/analytics/kpis/?{period}",
        f"/analytics/trends/?{period}&interval=hour",
        f"/analytics/trends/?{period}&interval=day",
        f"/analytics/trends/?{period}&interval=week",
        f"/analytics/insights/?{period}",
        f"/analytics/products/?{period}",
        f"/analytics/abandoned_carts/?{period}",
        f"/analytics/retention/?{period}",
        f"/analytics/geography/?{period}",
        "/segments/",
        "/segments/identified-users-list",
        "/segments/identified-users-sessions",
        "/notifications/scores/",
    ]


# When a derived row was written, not anything about the data: two shops processed a few seconds
# apart differ there whatever they hold.
PROCESSING_TIMES = frozenset({"created_at", "refreshed_at", "since", "scored_at"})


def rows_of(data: Dataset) -> tuple[list[str], list[list[str]]]:
    with data.path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, [row for _, row in zip(range(data.rows), reader, strict=False)]


def write(path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def busiest_buyer(data: Dataset, rows: list[list[str]]) -> str:
    """The buyer with the most events: purchases, carts and several sessions to erase."""
    user = data.user_column
    buyers = {row[user] for row in rows if row[data.type_column] == data.purchase}
    events = Counter(row[user] for row in rows if row[user] in buyers)
    return events.most_common(1)[0][0]


def imported(data: Dataset, path: Path, *, owner) -> Any:
    shop = ShopFactory(owner=owner, timezone=data.timezone)
    quiet = {"stdout": io.StringIO(), "stderr": io.StringIO()}
    call_command("import_events", str(path), shop=shop.domain, format=data.format, **quiet)
    call_command("process_events", shop=shop.domain, **quiet)
    return shop


def stable(value: Any, *, names: dict[tuple[str, int], str], domain: str) -> Any:
    """The answer with database ids replaced by what they name and processing times left out."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in PROCESSING_TIMES:
                continue
            if key in ("person", "person_id") and isinstance(item, int):
                out[key] = names.get(("person", item), item)
            elif key in ("id", "segment", "segment_id") and isinstance(item, int):
                out[key] = names.get(("segment", item), "?")
            elif key in ("session", "session_id") and isinstance(item, int):
                out[key] = names.get(("session", item), "?")
            else:
                out[key] = stable(item, names=names, domain=domain)
        return out
    if isinstance(value, list):
        return [stable(item, names=names, domain=domain) for item in value]
    if isinstance(value, str):
        # Pagination links name the shop.
        return value.replace(domain, "SHOP")
    return value


def id_names(shop) -> dict[tuple[str, int], str]:
    names: dict[tuple[str, int], str] = {}
    for pk, user_id in Person.objects.filter(shop=shop).values_list("pk", "user_id"):
        names[("person", pk)] = user_id
    for pk, user_id, started in Session.objects.filter(shop=shop).values_list(
        "pk", "person__user_id", "started_at"
    ):
        names[("session", pk)] = f"{user_id}@{started.isoformat()}"
    for pk, key in shop.segments.values_list("pk", "key"):
        names[("segment", pk)] = key
    return names


def answers(client: APIClient, shop, *, period: str) -> dict[str, Any]:
    names = id_names(shop)
    out = {}
    for url in endpoints(period):
        response = client.get(url + ("&" if "?" in url else "?") + f"shop={shop.domain}")
        assert response.status_code == 200, (url, response.content[:300])
        out[url] = stable(response.json(), names=names, domain=shop.domain)
    for segment in shop.segments.order_by("key"):
        members = client.get(f"/segments/{segment.pk}/members/?shop={shop.domain}")
        assert members.status_code == 200, (segment.key, members.content[:300])
        out[f"members:{segment.key}"] = stable(members.json(), names=names, domain=shop.domain)
    return out


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_erased_person_leaves_every_answer_as_if_never_imported(tmp_path, name):
    data = DATASETS[name]
    if not data.path.is_file():
        pytest.skip(f"{name} data not found at {data.path}")
    header, rows = rows_of(data)
    buyer = busiest_buyer(data, rows)
    theirs = [row for row in rows if row[data.user_column] == buyer]
    write(tmp_path / "all.csv", header, rows)
    write(tmp_path / "without.csv", header, [row for row in rows if row not in theirs])
    owner = UserFactory()
    full = imported(data, tmp_path / "all.csv", owner=owner)
    without = imported(data, tmp_path / "without.csv", owner=owner)
    client = APIClient()
    client.force_authenticate(user=owner)
    before = answers(client, full, period=data.period)
    buyer_orders = Order.objects.filter(shop=full, user_id=buyer).count()

    call_command(
        "erase_person", shop=full.domain, user_id=buyer, stdout=io.StringIO(), stderr=io.StringIO()
    )

    after = answers(client, full, period=data.period)
    expected = answers(client, without, period=data.period)
    assert before != expected  # the buyer made a difference to begin with
    assert [url for url in expected if after.get(url) != expected[url]] == []
    assert after == expected
    request = ErasureRequest.objects.get(shop=full)
    tz = ZoneInfo(data.timezone)
    assert request.completed_at is not None
    assert (request.kind, request.days) == (
        "user_id",
        sorted({data.occurred_at(row).astimezone(tz).date().isoformat() for row in theirs}),
    )
    assert request.counts["events"] == len(theirs)
    assert (request.counts["orders"], request.counts["persons"]) == (buyer_orders, 1)
    assert buyer not in str(request.counts)
    assert not Event.objects.filter(shop=full, user_id=buyer).exists()


@pytest.mark.django_db
def test_whole_shop_erasure_empties_every_rollup(shop, process_all):
    events_insert(
        shop_id=shop.pk,
        events=[
            event_in("e1", datetime(2026, 1, 5, 12, tzinfo=UTC)),
            event_in("e2", datetime(2026, 1, 9, 12, tzinfo=UTC), type="purchase", revenue=5),
        ],
        received_at=datetime(2026, 1, 10, tzinfo=UTC),
    )
    process_all(shop)
    rollups_refresh(shop_id=shop.pk, now=NOW)
    filled = [model.objects.filter(shop=shop).count() > 0 for model in ROLLUP_MODELS]

    erasure.shop_erase(shop=shop, keep_delivery_id=0, now=NOW)
    erasure.erasures_complete(shop_id=shop.pk, now=NOW)

    assert filled == [True] * len(ROLLUP_MODELS)
    assert [model.objects.filter(shop=shop).count() for model in ROLLUP_MODELS] == [0] * len(
        ROLLUP_MODELS
    )
