"""Revenue, orders, AOV and customers on UCI Online Retail against an independent pandas count.

The invoices dated in the tested periods (about a quarter of the file's 541,909 lines) are
imported once for the module into a UTC shop, so naive invoice dates are UTC dates; every figure
the tests compare is of one of those periods, and an invoice's date is its first line's, so the
app sees each compared invoice whole, exactly as in a full import. pandas still reads the whole
file. 2011-01-18 holds order 541431 and its cancellation C541433 (74215 units); 2011-12-09 holds
order 581483 and its cancellation C581484 (80995 units).
"""

import io
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from conftest import SHARED_DATA
from events.tests.factories import ShopFactory, UserFactory

PATH = SHARED_DATA / "online_retail" / "online_retail.csv.gz"
CENT = Decimal("0.01")
PERIODS = [
    ("2010-12-01", "2010-12-01"),
    ("2011-01-18", "2011-01-18"),
    ("2011-06-15", "2011-06-15"),
    ("2011-12-09", "2011-12-09"),
    ("2011-03-01", "2011-03-31"),
    ("2011-11-01", "2011-11-30"),
]


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    if not PATH.is_file():
        pytest.skip(f"UCI Online Retail not found at {PATH}")
    return pd.read_csv(PATH, dtype=str, keep_default_na=False)


def in_periods(days: pd.Series) -> pd.Series:
    return pd.concat([(days >= start) & (days <= end) for start, end in PERIODS], axis=1).any(
        axis=1
    )


@pytest.fixture(scope="module")
def retail(django_db_setup, django_db_blocker, raw, tmp_path_factory):
    # Every line of each invoice whose first line is dated in a tested period, in file order.
    first_day = raw.groupby("InvoiceNo", sort=False)["InvoiceDate"].transform("first").str[:10]
    path = tmp_path_factory.mktemp("retail") / "periods.csv"
    raw[in_periods(first_day)].to_csv(path, index=False)
    with django_db_blocker.unblock():
        user = UserFactory()
        shop = ShopFactory(owner=user, timezone="UTC")
        call_command(
            "import_events", str(path), "--shop", shop.domain, "--format", "online_retail",
            "--process", stdout=io.StringIO(), stderr=io.StringIO(),
        )  # fmt: skip
    yield shop, user
    with django_db_blocker.unblock():
        shop.delete()
        user.delete()


@pytest.fixture(scope="module")
def expected(raw) -> pd.DataFrame:
    """Per invoice of the whole file: kind (order/refund), UTC date, amount (Decimal cents) and
    customer."""
    df = raw[~raw["InvoiceNo"].str.startswith("A")].copy()
    df["is_refund"] = df["InvoiceNo"].str.startswith("C")
    quantity = df["Quantity"].astype(int)
    df["value"] = [
        Decimal(q) * Decimal(p) for q, p in zip(df["Quantity"], df["UnitPrice"], strict=True)
    ]
    # Orders count only their sale lines; a refund is the negated value of its lines.
    df.loc[~df["is_refund"] & (quantity <= 0), "value"] = Decimal(0)
    df.loc[df["is_refund"], "value"] = -df.loc[df["is_refund"], "value"]
    invoices = df.groupby("InvoiceNo", sort=False).agg(
        at=("InvoiceDate", "first"),
        value=("value", "sum"),
        customer=("CustomerID", "first"),
        is_refund=("is_refund", "first"),
    )
    invoices["value"] = [Decimal(v).quantize(CENT, ROUND_HALF_UP) for v in invoices["value"]]
    invoices["day"] = invoices["at"].str[:10]
    invoices["customer"] = invoices["customer"].str.removesuffix(".0")
    return invoices


def pandas_kpis(invoices: pd.DataFrame, start: str, end: str) -> dict:
    period = invoices[(invoices["day"] >= start) & (invoices["day"] <= end)]
    orders = period[~period["is_refund"]]
    refunds = period[period["is_refund"]]
    revenue = sum(orders["value"], Decimal(0)) - sum(refunds["value"], Decimal(0))
    customers = orders.loc[orders["customer"] != "", "customer"].nunique()
    return {
        "revenue": str(revenue),
        "orders": len(orders),
        "aov": str((revenue / len(orders)).quantize(CENT, ROUND_HALF_UP))
        if len(orders)
        else "0.00",
        "customers": customers,
    }


@pytest.mark.django_db
@pytest.mark.parametrize(("start", "end"), PERIODS)
def test_kpis_match_pandas(retail, expected, start, end):
    shop, user = retail
    client = APIClient()
    client.force_authenticate(user=user)

    body = client.get(f"/analytics/kpis/?shop={shop.domain}&start={start}&end={end}").json()

    got = {key: body[key] for key in ("revenue", "orders", "aov", "customers")}
    assert got == pandas_kpis(expected, start, end)


@pytest.mark.django_db
def test_large_cancellation_nets_out_on_its_day(retail, expected):
    shop, user = retail
    client = APIClient()
    client.force_authenticate(user=user)

    day = client.get(f"/analytics/kpis/?shop={shop.domain}&start=2011-12-09&end=2011-12-09").json()

    refunds = expected[expected["is_refund"] & (expected["day"] == "2011-12-09")]["value"]
    assert expected.loc["C581484", "value"] == Decimal("168469.60")
    assert day["refunds"] == str(sum(refunds, Decimal(0)))
    assert Decimal(day["revenue"]) == (
        sum(expected[~expected["is_refund"] & (expected["day"] == "2011-12-09")]["value"])
        - sum(refunds, Decimal(0))
    )
