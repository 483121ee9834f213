"""Every figure of the daily and weekly reports against an independent pandas computation.

UCI Online Retail from 2011-11-28 to its last day (2011-12-09, about 37 000 lines) is imported
with the project's importer into a UTC shop; pandas reads the same lines straight from the CSV.
Customers "new" or "returning" and the value segments look at history, so both sides see the
same slice. 2011-12-09 is the day the original system's sample report got wrong: it counted
line items as orders and booked the 80,995-unit order 581483 as revenue although C581484
cancelled it the same morning.
"""

import io
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from analytics.report_render import report_text_render
from analytics.selectors.reports import report_data_compute, report_period_get
from conftest import SHARED_DATA
from events.tests.factories import ShopFactory, UserFactory

pytestmark = pytest.mark.slow

PATH = SHARED_DATA / "online_retail" / "online_retail.csv.gz"
SLICE_START = "2011-11-28"
CENT = Decimal("0.01")
TODAY = date(2026, 1, 1)
DAYS = ["2011-11-29", "2011-12-05", "2011-12-08", "2011-12-09"]
WEEKS = ["2011-11-28", "2011-12-05"]
BANDS = (("value_vip", 95), ("value_high", 67), ("value_medium", 33), ("value_low", 0))


def cents(value: Decimal) -> str:
    return str(Decimal(value).quantize(CENT, ROUND_HALF_UP))


@pytest.fixture(scope="module")
def lines() -> pd.DataFrame:
    if not PATH.is_file():
        pytest.skip(f"UCI Online Retail not found at {PATH}")
    df = pd.read_csv(PATH, dtype=str, keep_default_na=False)
    df = df[df["InvoiceDate"].str[:10] >= SLICE_START].copy()
    df = df[~df["InvoiceNo"].str.startswith("A")]
    df["quantity"] = df["Quantity"].astype(int)
    df["value"] = [
        Decimal(q) * Decimal(p) for q, p in zip(df["Quantity"], df["UnitPrice"], strict=True)
    ]
    df["at"] = pd.to_datetime(df["InvoiceDate"])
    df["customer"] = df["CustomerID"].str.removesuffix(".0")
    return df


@pytest.fixture(scope="module")
def retail(django_db_setup, django_db_blocker, lines, tmp_path_factory):
    path = tmp_path_factory.mktemp("retail") / "slice.csv"
    columns = [
        "InvoiceNo",
        "StockCode",
        "Description",
        "Quantity",
        "InvoiceDate",
        "UnitPrice",
        "CustomerID",
        "Country",
    ]
    pd.read_csv(PATH, dtype=str, keep_default_na=False).pipe(
        lambda df: df[df["InvoiceDate"].str[:10] >= SLICE_START]
    )[columns].to_csv(path, index=False)
    with django_db_blocker.unblock():
        user = UserFactory()
        shop = ShopFactory(owner=user, timezone="UTC", currency="GBP", name="Online Retail")
        call_command(
            "import_events",
            str(path),
            "--shop",
            shop.domain,
            "--format",
            "online_retail",
            "--process",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    yield shop
    with django_db_blocker.unblock():
        shop.delete()
        user.delete()


@pytest.fixture(scope="module")
def invoices(lines) -> pd.DataFrame:
    """One row per invoice: orders (numeric) with their sale lines' value, refunds (C)."""
    df = lines.copy()
    df["is_refund"] = df["InvoiceNo"].str.startswith("C")
    df["sale"] = [
        v if q > 0 else Decimal(0) for v, q in zip(df["value"], df["quantity"], strict=True)
    ]
    df["refund"] = [-v for v in df["value"]]
    grouped = df.groupby("InvoiceNo", sort=False).agg(
        at=("at", "first"),
        customer=("customer", "first"),
        country=("Country", "first"),
        is_refund=("is_refund", "first"),
        sale=("sale", "sum"),
        refund=("refund", "sum"),
    )
    grouped["person"] = [
        c if c else f"invoice-{i}" for i, c in zip(grouped.index, grouped["customer"], strict=True)
    ]
    grouped["amount"] = [
        r if is_r else s
        for s, r, is_r in zip(grouped["sale"], grouped["refund"], grouped["is_refund"], strict=True)
    ]
    return grouped


@pytest.fixture(scope="module")
def sessions(invoices) -> pd.DataFrame:
    """Sessions of the purchase events (one per order, by person): a new one after a gap of more
    than 30 minutes or 24 hours after the session's start (SPEC.md)."""
    orders = invoices[~invoices["is_refund"]].sort_values(["person", "at"], kind="stable")
    starts = []
    for _, group in orders.groupby("person", sort=False):
        start = previous = None
        for at in group["at"]:
            if (
                start is None
                or at - previous > timedelta(minutes=30)
                or at - start >= timedelta(hours=24)
            ):
                start = at
                starts.append(at)
            previous = at
    return pd.DataFrame({"at": starts})


def net_per_product(sale_lines: pd.DataFrame, refund_lines: pd.DataFrame) -> pd.DataFrame:
    """Units, orders and revenue by StockCode: the sale lines less the cancellation lines."""
    sales = sale_lines.groupby("StockCode").agg(
        units=("quantity", "sum"), orders=("InvoiceNo", "nunique"), revenue=("value", "sum")
    )
    taken = refund_lines.groupby("StockCode").agg(
        units=("quantity", "sum"), revenue=("value", "sum")
    )
    codes = sales.index.union(taken.index)
    return pd.DataFrame(
        {
            "units": [int(sales["units"].get(c, 0)) + int(taken["units"].get(c, 0)) for c in codes],
            "orders": [int(sales["orders"].get(c, 0)) for c in codes],
            "revenue": [
                sales["revenue"].get(c, Decimal(0)) + taken["revenue"].get(c, Decimal(0))
                for c in codes
            ],
        },
        index=codes,
    )


def headline(invoices, sessions, first: date, last: date) -> dict:
    start, end = pd.Timestamp(first), pd.Timestamp(last + timedelta(days=1))
    period = invoices[(invoices["at"] >= start) & (invoices["at"] < end)]
    orders = period[~period["is_refund"]]
    gross = sum(orders["amount"], Decimal(0))
    refunds = sum(period[period["is_refund"]]["amount"], Decimal(0))
    revenue = gross - refunds
    persons = invoices[~invoices["is_refund"]]
    first_seen = persons.groupby("person")["at"].min()
    in_period = orders["person"].unique()
    return {
        "first": first.isoformat(),
        "last": last.isoformat(),
        "revenue": cents(revenue),
        "gross": cents(gross),
        "refunds": cents(refunds),
        "orders": len(orders),
        "customers": orders.loc[orders["customer"] != "", "customer"].nunique(),
        "aov": cents(revenue / len(orders)) if len(orders) else "0.00",
        "sessions": int(((sessions["at"] >= start) & (sessions["at"] < end)).sum()),
        "visitors": len(in_period),
        "_new_visitors": int(((first_seen >= start) & (first_seen < end)).sum()),
    }


def change(now, before) -> float | None:
    return (
        round(float((Decimal(now) - Decimal(before)) / Decimal(before)), 6)
        if Decimal(before)
        else None
    )


def expected_report(lines, invoices, sessions, kind: str, first: date) -> dict:
    last = first + timedelta(days=6 if kind == "weekly" else 0)
    start, end = pd.Timestamp(first), pd.Timestamp(last + timedelta(days=1))
    period = invoices[(invoices["at"] >= start) & (invoices["at"] < end)]
    orders = period[~period["is_refund"]]
    refunds = period[period["is_refund"]]
    head = headline(invoices, sessions, first, last)
    new_visitors = head.pop("_new_visitors")

    in_period = lines[(lines["at"] >= start) & (lines["at"] < end)]
    sale_lines = in_period[
        ~in_period["InvoiceNo"].str.startswith("C") & (in_period["quantity"] > 0)
    ]
    # Cancellation lines net their StockCode on their own day (negative quantity and value).
    refund_lines = in_period[in_period["InvoiceNo"].str.startswith("C")]
    per_product = net_per_product(sale_lines, refund_lines)
    top = sorted(
        (r for r in per_product.itertuples() if r.revenue > 0),
        key=lambda r: (-r.revenue, r.Index),
    )[:5]
    net_units = int(per_product["units"].sum())
    net_revenue = sum(per_product["revenue"], Decimal(0))

    hourly = []
    period_sessions = sessions[(sessions["at"] >= start) & (sessions["at"] < end)]
    for hour in range(24):
        at_hour = period[period["at"].dt.hour == hour]
        net = sum(at_hour[~at_hour["is_refund"]]["amount"], Decimal(0)) - sum(
            at_hour[at_hour["is_refund"]]["amount"], Decimal(0)
        )
        hourly.append(
            {
                "hour": hour,
                "revenue": cents(net),
                "orders": int((~at_hour["is_refund"]).sum()),
                "sessions": int((period_sessions["at"].dt.hour == hour).sum()),
            }
        )
    days = []
    for i in range((last - first).days + 1):
        day = first + timedelta(days=i)
        h = headline(invoices, sessions, day, day)
        days.append(
            {
                "day": day.isoformat(),
                "revenue": h["revenue"],
                "orders": h["orders"],
                "sessions": h["sessions"],
            }
        )

    def peak(key):
        best = max(hourly, key=lambda r: (Decimal(str(r[key])), -r["hour"]))
        return (best["hour"], best[key]) if Decimal(str(best[key])) > 0 else (None, 0)

    countries = orders.groupby("country").agg(orders=("amount", "size"), revenue=("amount", "sum"))
    country_rows = sorted(countries.itertuples(), key=lambda r: (-r.revenue, r.Index))

    identified = orders[orders["customer"] != ""]
    earlier = set(invoices[~invoices["is_refund"] & (invoices["at"] < start)]["customer"])
    per_customer = identified.groupby("customer")["amount"].sum()
    new = per_customer[~per_customer.index.isin(earlier)]
    returning = per_customer[per_customer.index.isin(earlier)]
    guests = orders[orders["customer"] == ""]

    to_date = (
        invoices[~invoices["is_refund"] & (invoices["at"] < end)].groupby("person")["amount"].sum()
    )
    to_date = to_date[to_date > 0].astype(float)
    # Percentile: the share of customers with strictly lower revenue (rank "min" counts ties low).
    percentile = (to_date.rank(method="min") - 1) / len(to_date) * 100
    band = {p: next(k for k, low in BANDS if pct >= low) for p, pct in percentile.items()}
    buyers = orders.groupby("person")["amount"].sum()
    segments = []
    for key, name in (
        ("value_vip", "VIP"),
        ("value_high", "High"),
        ("value_medium", "Medium"),
        ("value_low", "Low"),
    ):
        members = buyers[[band.get(p) == key for p in buyers.index]]
        segments.append(
            {
                "key": key,
                "name": name,
                "customers": len(members),
                "revenue": cents(sum(members, Decimal(0))),
            }
        )

    def comparison(label, before_first, before_last):
        before = headline(invoices, sessions, before_first, before_last)
        before.pop("_new_visitors")
        return {
            "label": label,
            "figures": before,
            "revenue_change": change(head["revenue"], before["revenue"]),
            "orders_change": change(head["orders"], before["orders"]),
            "aov_change": change(head["aov"], before["aov"]),
            "sessions_change": change(head["sessions"], before["sessions"]),
        }

    days_n = (last - first).days + 1
    comparisons = [
        comparison(
            "the previous week" if kind == "weekly" else "the previous day",
            first - timedelta(days=days_n),
            first - timedelta(days=1),
        )
    ]
    if kind == "daily":
        week_ago = first - timedelta(days=7)
        comparisons.append(comparison(f"last {week_ago:%A}", week_ago, week_ago))
    peak_revenue_hour, peak_revenue = peak("revenue")
    peak_sessions_hour, peak_sessions = peak("sessions")
    return {
        "kind": kind,
        "first": first.isoformat(),
        "last": last.isoformat(),
        "headline": head,
        "products_sold": net_units,
        "distinct_products": int((per_product["units"] > 0).sum()),
        "peak_revenue_hour": peak_revenue_hour,
        "peak_revenue": cents(Decimal(peak_revenue)),
        "peak_sessions_hour": peak_sessions_hour,
        "peak_sessions": peak_sessions,
        "hours": hourly,
        "days": days,
        "top_products": [
            {
                "product_id": r.Index,
                "units": int(r.units),
                "orders": int(r.orders),
                "revenue": cents(r.revenue),
            }
            for r in top
        ],
        "top_categories": [
            {"category": "Uncategorised", "units": net_units, "revenue": cents(net_revenue)}
        ]
        if net_revenue > 0
        else [],
        "countries": [
            {"country": r.Index, "orders": int(r.orders), "revenue": cents(r.revenue)}
            for r in country_rows
        ],
        "unattributed_refunds": cents(sum(refunds["amount"], Decimal(0))),
        "customers": {
            "new": len(new),
            "returning": len(returning),
            "new_revenue": cents(sum(new, Decimal(0))),
            "returning_revenue": cents(sum(returning, Decimal(0))),
            "guest_orders": len(guests),
            "guest_revenue": cents(sum(guests["amount"], Decimal(0))),
            "new_visitors": new_visitors,
            "returning_visitors": head["visitors"] - new_visitors,
        },
        "segments": segments,
        "comparisons": comparisons,
        "products_net": True,
    }


def comparable(data: dict) -> dict:
    """The report's figures without what pandas does not compute (names, charts, findings, and
    the stored anomalies: test_reports.py checks those)."""
    keep = {
        k: v
        for k, v in data.items()
        if k not in ("shop", "shop_name", "timezone", "currency", "findings", "charts", "anomalies")
    }
    keep["top_products"] = [
        {k: v for k, v in p.items() if k != "name"} for p in data["top_products"]
    ]
    return keep


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "first"), [("daily", d) for d in DAYS] + [("weekly", w) for w in WEEKS]
)
def test_report_figures_match_pandas(retail, lines, invoices, sessions, kind, first):
    day = date.fromisoformat(first)
    period = report_period_get(shop=retail, kind=kind, day=day, today=TODAY)

    data = report_data_compute(shop=retail, kind=kind, period=period)

    assert comparable(data) == expected_report(lines, invoices, sessions, kind, period.first)


@pytest.mark.django_db
def test_2011_12_09_counts_invoices_and_nets_the_cancellation(retail, lines, invoices):
    period = report_period_get(shop=retail, kind="daily", day=date(2011, 12, 9), today=TODAY)

    data = report_data_compute(shop=retail, kind="daily", period=period)

    day = lines[lines["at"].dt.date == date(2011, 12, 9)]
    sale_lines = day[~day["InvoiceNo"].str.startswith("C")]
    assert invoices.loc["581483", "sale"] == Decimal("168469.60")
    assert invoices.loc["C581484", "refund"] == Decimal("168469.60")
    # The original report's mistakes: one "order" per line and the cancelled order as revenue.
    assert data["headline"]["orders"] == sale_lines["InvoiceNo"].nunique() != len(sale_lines)
    naive = sum(sale_lines[sale_lines["quantity"] > 0]["value"], Decimal(0))
    assert Decimal(data["headline"]["revenue"]) == naive - sum(
        invoices[invoices["is_refund"] & (invoices["at"].dt.date == date(2011, 12, 9))]["refund"],
        Decimal(0),
    )
    assert Decimal(data["headline"]["revenue"]) < naive - Decimal("168469.60") + Decimal("1000")
    assert any(
        f.startswith("Refunds and cancellations took GBP 168,789.07") for f in data["findings"]
    )
    assert len(data["findings"]) == 3


PAPER_CRAFT = "23843"  # PAPER CRAFT , LITTLE BIRDIE: 80,995 units in 581483, all of them in C581484


@pytest.mark.django_db
@pytest.mark.parametrize("first", DAYS)
def test_top_products_and_categories_are_net_of_cancellations(retail, lines, first):
    day = date.fromisoformat(first)
    period = report_period_get(shop=retail, kind="daily", day=day, today=TODAY)

    data = report_data_compute(shop=retail, kind="daily", period=period)

    on_day = lines[lines["at"].dt.date == day]
    cancellations = on_day[on_day["InvoiceNo"].str.startswith("C")]
    sales = on_day[~on_day["InvoiceNo"].str.startswith("C") & (on_day["quantity"] > 0)]
    gross = sales.groupby("StockCode")["value"].sum()
    net = net_per_product(sales, cancellations)
    # The day has cancellations of products it also sold, so netting them changes the figures.
    assert len(cancellations) > 0
    assert data["products_sold"] == int(net["units"].sum()) < int(sales["quantity"].sum())
    for row in data["top_products"]:
        assert Decimal(row["revenue"]) == net.loc[row["product_id"], "revenue"] > 0
        assert row["units"] == net.loc[row["product_id"], "units"]
    ranked = net[net["revenue"] > 0].sort_values("revenue", ascending=False, kind="stable")
    assert [r["product_id"] for r in data["top_products"]][:1] == list(ranked.index[:1])
    (category,) = data["top_categories"]
    assert Decimal(category["revenue"]) == sum(net["revenue"], Decimal(0)) < sum(gross, Decimal(0))
    assert "Top products (net of refunds)" in report_text_render(data, data["findings"])
    if day == date(2011, 12, 9):
        # Before the cancellation it is the day's best seller by far; net, it sold nothing.
        assert gross.idxmax() == PAPER_CRAFT
        assert gross[PAPER_CRAFT] == Decimal("168469.60")
        assert net.loc[PAPER_CRAFT, "units"] == 0
        assert net.loc[PAPER_CRAFT, "revenue"] == 0
        assert PAPER_CRAFT not in [r["product_id"] for r in data["top_products"]]
        assert data["top_products"][0]["product_id"] != PAPER_CRAFT
        assert not any("PAPER CRAFT" in finding for finding in data["findings"])


@pytest.mark.django_db
def test_report_command_prints_the_text_and_refuses_bad_days(retail):
    out = io.StringIO()

    call_command("report", "--shop", retail.domain, "--day", "2011-12-09", stdout=out)

    text = out.getvalue()
    assert text.startswith("Daily report for Online Retail: 2011-12-09 (UTC)\n")
    assert "  Orders                                 44\n" in text
    with pytest.raises(CommandError, match="before the shop's first event \\(2011-11-28\\)"):
        call_command("report", "--shop", retail.domain, "--day", "2011-11-27")
    with pytest.raises(CommandError, match="is in the future"):
        call_command("report", "--shop", retail.domain, "--week", "2099-01-05")
