"""The audience breakdown (sessions, visitors, conversion, orders, revenue, AOV per person
trait) against an independent pandas computation over random data, on the real database."""

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from analytics.services.rollups import rollups_refresh
from analytics.tests.factories import OrderFactory, RefundFactory, SessionFactory
from events.models import Order, Person, Refund, Session
from events.tests.factories import PersonFactory

BERLIN = ZoneInfo("Europe/Berlin")
FIRST, LAST = date(2026, 1, 5), date(2026, 1, 11)
# The period as instants: Berlin midnight of the first day to Berlin midnight after the last.
START = datetime(2026, 1, 5, tzinfo=BERLIN).astimezone(UTC)
END = datetime(2026, 1, 12, tzinfo=BERLIN).astimezone(UTC)
PERIOD = f"start={FIRST}&end={LAST}"
BANDS = ["18-25", "26-35", "36-45", "46-55", "56-65", "66+"]


def _traits(rng: random.Random) -> dict:
    kind = rng.randrange(7)
    if kind == 0:
        return {"age": rng.randint(10, 95)}
    if kind == 1:
        return {"age": f"{rng.uniform(15, 80):.1f}", "city": "Berlin"}
    if kind == 2:
        born = date(2026, 1, 11) - timedelta(days=rng.randint(15 * 365, 80 * 365))
        return {"birth_date": born.isoformat()}
    if kind == 3:
        # Birthdays on and around the period's last day: the age is taken on that day.
        born = date(rng.choice([1990, 2000, 2008]), 1, rng.choice([10, 11, 12]))
        return {"birthday": f"{born.isoformat()}T00:00:00Z"}
    if kind == 4:
        return {"age": "n/a"}
    if kind == 5:
        return {"age": 150}
    return {}


def _instant(rng: random.Random, first: datetime, last: datetime) -> datetime:
    return first + timedelta(seconds=rng.randrange(int((last - first).total_seconds())))


@pytest.fixture
def audience(shop, other_shop):
    """Random persons, sessions, orders and refunds around the period, and a second shop's."""
    rng = random.Random(20)
    shop.timezone = "Europe/Berlin"
    shop.save()
    window = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 15, tzinfo=UTC))
    persons = [
        PersonFactory(
            shop=shop,
            traits=_traits(rng),
            first_seen_at=_instant(rng, datetime(2025, 12, 1, tzinfo=UTC), window[1]),
        )
        for _ in range(80)
    ]
    for _ in range(250):
        person = rng.choice(persons)
        SessionFactory(
            shop=shop,
            person=person,
            started_at=max(person.first_seen_at, _instant(rng, *window)),
            is_converted=rng.random() < 0.3,
            country=rng.choice(["DE", "US"]),
        )
    orders = [
        OrderFactory(
            shop=shop,
            person=rng.choice([*persons, None]),
            placed_at=_instant(rng, *window),
            total=Decimal(rng.randint(500, 20000)) / 100,
            is_cancelled=rng.random() < 0.1,
        )
        for _ in range(70)
    ]
    for _ in range(20):
        RefundFactory(
            shop=shop,
            order=rng.choice([*orders, None]),
            refunded_at=_instant(rng, *window),
            amount=Decimal(rng.randint(100, 3000)) / 100,
        )
    stranger = PersonFactory(shop=other_shop, traits={"age": 30}, first_seen_at=START)
    SessionFactory(shop=other_shop, person=stranger, started_at=START, is_converted=True)
    OrderFactory(shop=other_shop, person=stranger, placed_at=START, total=Decimal(999))
    return shop


def _expected(shop, breakdown: str, *, country: str = "") -> list[dict]:
    """The same figures from the tables with pandas, the age rule written out independently."""
    persons = pd.DataFrame(
        Person.objects.filter(shop=shop).values("id", "traits", "first_seen_at")
    ).set_index("id")
    if breakdown == "age_band":

        def age(traits: dict) -> float:
            stated = pd.to_numeric(pd.Series([traits.get("age")], dtype=object), errors="coerce")
            if not np.isnan(stated.iloc[0]):
                return float(stated.iloc[0])
            born = traits.get("birth_date") or traits.get("birthday")
            if not born:
                return np.nan
            b = date.fromisoformat(born[:10])
            return LAST.year - b.year - ((LAST.month, LAST.day) < (b.month, b.day))

        ages = np.floor(persons["traits"].map(age).astype(float))
        band = pd.cut(ages, [18, 26, 36, 46, 56, 66, 121], right=False, labels=BANDS)
        persons["value"] = band.astype(object).where(band.notna(), "none")
        values = [*BANDS, "none"]
    else:
        seen = persons["first_seen_at"]
        persons["value"] = np.where((seen >= START) & (seen < END), "new", "returning")
        values = ["new", "returning", "none"]

    def value_of(person_ids: pd.Series) -> pd.Series:
        return person_ids.map(persons["value"]).fillna("none")

    sessions = pd.DataFrame(
        Session.objects.filter(shop=shop).values(
            "person_id", "started_at", "is_converted", "country"
        )
    )
    sessions = sessions[(sessions.started_at >= START) & (sessions.started_at < END)]
    if country:
        sessions = sessions[sessions.country == country]
    sessions["value"] = value_of(sessions.person_id)
    orders = pd.DataFrame(
        Order.objects.filter(shop=shop).values("person_id", "placed_at", "total", "is_cancelled")
    )
    orders = orders[(orders.placed_at >= START) & (orders.placed_at < END) & ~orders.is_cancelled]
    orders["value"] = value_of(orders.person_id)
    refunds = pd.DataFrame(
        Refund.objects.filter(shop=shop).values("order__person_id", "refunded_at", "amount")
    )
    refunds = refunds[(refunds.refunded_at >= START) & (refunds.refunded_at < END)]
    refunds["value"] = value_of(refunds.order__person_id)

    rows = []
    for value in values:
        s = sessions[sessions.value == value]
        o = orders[orders.value == value]
        revenue = o.total.sum() - refunds[refunds.value == value].amount.sum()
        n, converted = len(s), int(s.is_converted.sum())
        rows.append(
            {
                "value": value,
                "sessions": n,
                "visitors": s.person_id.nunique(),
                "converted_sessions": converted,
                "conversion": round(converted / n, 6) if n else 0.0,
                "orders": len(o),
                "revenue": f"{Decimal(revenue):.2f}",
                "aov": f"{Decimal(revenue) / len(o) if len(o) else Decimal(0):.2f}",
            }
        )
    return rows


@pytest.mark.django_db
@pytest.mark.parametrize("breakdown", ["age_band", "visitor_type"])
def test_audience_equals_an_independent_pandas_computation(audience, api_client, breakdown):
    expected = _expected(audience, breakdown)

    response = api_client.get(
        f"/analytics/audience/?shop={audience.domain}&{PERIOD}&breakdown={breakdown}"
    )

    assert response.status_code == 200
    body = response.json()
    assert body["breakdown"] == breakdown
    assert (body["start"], body["end"]) == (str(FIRST), str(LAST))
    assert body["rows"] == expected
    # Every band holds someone in this data, so the test is not passing on empty rows.
    assert all(row["sessions"] > 0 for row in body["rows"] if row["value"] != "none")
    assert sum(row["orders"] for row in body["rows"]) == len(
        [o for o in audience.orders.all() if START <= o.placed_at < END and not o.is_cancelled]
    )


@pytest.mark.django_db
def test_audience_totals_equal_the_kpis(audience, api_client):
    query = f"shop={audience.domain}&{PERIOD}"
    rollups_refresh(shop_id=audience.pk, now=datetime(2026, 1, 20, tzinfo=UTC))

    rows = api_client.get(f"/analytics/audience/?{query}").json()["rows"]
    kpis = api_client.get(f"/analytics/kpis/?{query}").json()

    assert sum(row["orders"] for row in rows) == kpis["orders"] > 0
    assert sum(Decimal(row["revenue"]) for row in rows) == Decimal(kpis["revenue"])


@pytest.mark.django_db
def test_a_session_filter_restricts_the_sessions_not_the_orders(audience, api_client):
    expected = _expected(audience, "age_band", country="DE")

    response = api_client.get(f"/analytics/audience/?shop={audience.domain}&{PERIOD}&country=DE")

    assert response.json()["rows"] == expected
    unfiltered = _expected(audience, "age_band")
    assert [r["orders"] for r in expected] == [r["orders"] for r in unfiltered]
    assert sum(r["sessions"] for r in expected) < sum(r["sessions"] for r in unfiltered)


@pytest.mark.django_db
def test_audience_csv_has_a_row_per_band(audience, api_client):
    response = api_client.get(f"/analytics/audience/?shop={audience.domain}&{PERIOD}&format=csv")

    lines = response.content.decode().strip().splitlines()
    assert response.status_code == 200
    assert lines[0].split(",")[:3] == ["value", "sessions", "visitors"]
    assert [line.split(",")[0] for line in lines[1:]] == [*BANDS, "none"]


@pytest.mark.django_db
def test_audience_reads_in_a_fixed_number_of_queries(
    audience, api_client, django_assert_num_queries
):
    path = f"/analytics/audience/?shop={audience.domain}&{PERIOD}"

    # The shop, then sessions, orders and refunds by person and one read of their persons;
    # then only the shop, the answer from cache.
    with django_assert_num_queries(5):
        cold = api_client.get(path)
    with django_assert_num_queries(1):
        warm = api_client.get(path)

    assert warm.json() == cold.json()


@pytest.mark.django_db
def test_unknown_breakdown_is_a_400_envelope(shop, api_client):
    response = api_client.get(f"/analytics/audience/?shop={shop.domain}&breakdown=segment")

    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid",
        "detail": "breakdown: must be one of age_band, visitor_type",
        "fields": {"breakdown": ["must be one of age_band, visitor_type"]},
    }
