"""Reports: when they are due (shop timezone), email through a real SMTP server, categories,
escaping, the archive API and its bad input."""

import socket
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone
from rest_framework.test import APIClient

from analytics.models import Anomaly, Report, ReportRecipient
from analytics.periods import Period
from analytics.report_render import report_html_render, report_text_render
from analytics.selectors.reports import report_data_compute, reports_due_get
from analytics.services.reports import report_generate, report_recipient_save
from analytics.services.rollups import rollups_rebuild
from analytics.tasks import report_deliver_task, reports_sweep_task
from clickserver.errors import ApplicationError
from events.models import Order, OrderLine, Product, Refund, RefundLine
from events.tests.factories import EventFactory, ShopFactory, UserFactory

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)  # a Monday
TODAY = date(2026, 12, 7)


def order(shop, order_id: str, placed_at: datetime, lines: list[tuple[str, int, str]], **fields):
    total = sum((q * Decimal(p) for _, q, p in lines), Decimal(0))
    created = Order.objects.create(
        shop=shop, order_id=order_id, placed_at=placed_at, total=total, **fields
    )
    OrderLine.objects.bulk_create(
        OrderLine(order=created, product_id=pid, quantity=q, unit_price=Decimal(p))
        for pid, q, p in lines
    )
    return created


@pytest.fixture
def tea_shop(db):
    """A Berlin shop with a catalogue, three orders on 2026-12-03 (one cancelled) and an event."""
    owner = UserFactory()
    shop = ShopFactory(
        owner=owner, timezone="Europe/Berlin", currency="EUR", name="<script>alert(1)</script>"
    )
    for pid, title, category in [
        ("T1", "Sencha", "Green <tea>"),
        ("T2", "Assam", "Black"),
        ("T3", "Matcha", "Green <tea>"),
    ]:
        Product.objects.create(
            shop=shop, product_id=pid, title=title, category=category, updated_at=NOW
        )
    EventFactory(shop=shop, occurred_at=datetime(2026, 12, 1, 9, tzinfo=UTC))
    # 23:30 UTC on the 2nd is 00:30 on the 3rd in Berlin: it belongs to the 3rd.
    order(
        shop,
        "1",
        datetime(2026, 12, 2, 23, 30, tzinfo=UTC),
        [("T1", 2, "5.00"), ("T2", 1, "7.50")],
        user_id="u1",
        country="DE",
    )
    order(
        shop,
        "2",
        datetime(2026, 12, 3, 10, 0, tzinfo=UTC),
        [("T3", 1, "30.00"), ("X9", 3, "1.00")],
        user_id="u2",
        country="FR",
    )
    order(
        shop,
        "3",
        datetime(2026, 12, 3, 11, 0, tzinfo=UTC),
        [("T2", 100, "7.50")],
        user_id="u2",
        country="FR",
        is_cancelled=True,
    )
    rollups_rebuild(shop_id=shop.pk, now=NOW)
    shop.owner = owner
    return shop


def test_reports_due_follow_each_shop_timezone(db):
    auckland = ShopFactory(timezone="Pacific/Auckland")  # UTC+13 in December
    los_angeles = ShopFactory(timezone="America/Los_Angeles")  # UTC-8
    quiet = ShopFactory(timezone="UTC")
    for shop, day in [
        (auckland, date(2026, 12, 7)),
        (auckland, date(2026, 12, 2)),
        (los_angeles, date(2026, 12, 6)),
    ]:
        local_noon = datetime(day.year, day.month, day.day, 12, tzinfo=ZoneInfo(shop.timezone))
        EventFactory(shop=shop, occurred_at=local_noon.astimezone(UTC))

    due = reports_due_get(shops=[auckland, los_angeles, quiet], now=NOW)

    # 12:00 UTC Monday: Auckland's Tuesday 01:00 has passed its settling hour, so Monday's daily
    # is due and last week's weekly; Los Angeles is at Monday 04:00: Sunday and the same week.
    assert due == [
        (auckland.pk, "daily", date(2026, 12, 7)),
        (auckland.pk, "weekly", date(2026, 11, 30)),
        (los_angeles.pk, "daily", date(2026, 12, 6)),
        (los_angeles.pk, "weekly", date(2026, 11, 30)),
    ]
    assert reports_due_get(shops=[auckland], now=NOW - timedelta(minutes=1)) == [
        (auckland.pk, "weekly", date(2026, 11, 30))
    ]


def test_categories_countries_and_cancellations_on_a_berlin_day(tea_shop):
    period = Period(date(2026, 12, 3), date(2026, 12, 3), ZoneInfo("Europe/Berlin"))

    data = report_data_compute(shop=tea_shop, kind="daily", period=period)

    assert (data["headline"]["revenue"], data["headline"]["orders"]) == ("50.50", 2)
    assert data["top_categories"] == [
        {"category": "Green <tea>", "units": 3, "revenue": "40.00"},
        {"category": "Black", "units": 1, "revenue": "7.50"},
        {"category": "Uncategorised", "units": 3, "revenue": "3.00"},
    ]
    assert data["countries"] == [
        {"country": "FR", "orders": 1, "revenue": "33.00"},
        {"country": "DE", "orders": 1, "revenue": "17.50"},
    ]
    assert (data["products_sold"], data["distinct_products"]) == (7, 4)
    assert (data["peak_revenue_hour"], data["peak_revenue"]) == (11, "33.00")


def test_product_and_category_figures_net_refund_lines_on_the_refunds_day(tea_shop):
    berlin = ZoneInfo("Europe/Berlin")
    # Order 2's Matcha comes back on the 4th (Berlin), with half of order 1's Sencha.
    refund = Refund.objects.create(
        shop=tea_shop, refund_id="r1", order=Order.objects.get(order_id="2"),
        source_order_id="2", amount=Decimal("35.00"),
        refunded_at=datetime(2026, 12, 4, 9, 0, tzinfo=UTC),
    )  # fmt: skip
    RefundLine.objects.bulk_create(
        [
            RefundLine(refund=refund, product_id="T3", quantity=1, amount=Decimal("30.00")),
            RefundLine(refund=refund, product_id="T1", quantity=1, amount=Decimal("5.00")),
        ]
    )
    rollups_rebuild(shop_id=tea_shop.pk, now=NOW)

    sale_day = report_data_compute(
        shop=tea_shop, kind="daily", period=Period(date(2026, 12, 3), date(2026, 12, 3), berlin)
    )
    refund_day = report_data_compute(
        shop=tea_shop, kind="daily", period=Period(date(2026, 12, 4), date(2026, 12, 4), berlin)
    )
    week = report_data_compute(
        shop=tea_shop, kind="weekly", period=Period(date(2026, 11, 30), date(2026, 12, 6), berlin)
    )

    # The day of the sales is as it was: refunds count on their own day, as revenue does.
    assert sale_day["top_categories"][0] == {
        "category": "Green <tea>", "units": 3, "revenue": "40.00"
    }  # fmt: skip
    assert sale_day["products_sold"] == 7
    # The refund's day: nothing sold, two units and 35.00 taken back; no positive product.
    assert (refund_day["headline"]["revenue"], refund_day["products_sold"]) == ("-35.00", -2)
    assert (refund_day["top_products"], refund_day["top_categories"]) == ([], [])
    assert refund_day["distinct_products"] == 0
    # The week: Matcha sold and refunded nets to nothing and is no top product (its +30 on
    # one day must not rank it); Sencha keeps one unit.
    assert [(p["product_id"], p["units"], p["revenue"]) for p in week["top_products"]] == [
        ("T2", 1, "7.50"),
        ("T1", 1, "5.00"),
        ("X9", 3, "3.00"),
    ]
    assert week["top_categories"] == [
        {"category": "Black", "units": 1, "revenue": "7.50"},
        {"category": "Green <tea>", "units": 1, "revenue": "5.00"},
        {"category": "Uncategorised", "units": 3, "revenue": "3.00"},
    ]
    assert (week["products_sold"], week["distinct_products"]) == (5, 3)
    assert week["headline"]["revenue"] == "15.50"
    text = report_text_render(week, week["findings"])
    assert "Top products (net of refunds)" in text
    assert "Top categories (net of refunds)" in text
    html = report_html_render(week, week["findings"], week["charts"])
    assert "Top products (net of refunds)" in html


def test_a_report_stored_before_refund_lines_keeps_its_label(tea_shop):
    period = Period(date(2026, 12, 3), date(2026, 12, 3), ZoneInfo("Europe/Berlin"))
    data = report_data_compute(shop=tea_shop, kind="daily", period=period)
    del data["products_net"]

    text = report_text_render(data, data["findings"])

    assert "Top products (sales before refunds)" in text
    assert "Top categories (sales before refunds)" in text
    assert "Top products (sales before refunds)" in report_html_render(
        data, data["findings"], data["charts"]
    )


def anomaly(shop, metric: str, start: datetime, hours: int, severity: str, explanation: str):
    return Anomaly.objects.create(
        shop=shop, kind="traffic", metric=metric, window_start=start,
        window_end=start + timedelta(hours=hours), observed=412, expected=80, band_low=50,
        band_high=120, score=9.0, direction="spike", severity=severity, detector="seasonal_mad",
        explanation=explanation, opened_at=start, updated_at=start,
    )  # fmt: skip


def test_the_periods_anomalies_are_listed_in_local_time_and_a_critical_one_is_a_finding(
    tea_shop,
):
    berlin = ZoneInfo("Europe/Berlin")
    # 23:00 UTC on the 2nd is the 3rd's first Berlin hour: in; 22:00 UTC is the 2nd's last: out.
    anomaly(tea_shop, "sessions_hourly", datetime(2026, 12, 2, 23, tzinfo=UTC), 1, "warning",
            "Sessions 00:00–01:00 were 30, about 3× the usual 10.")  # fmt: skip
    anomaly(tea_shop, "sessions_hourly", datetime(2026, 12, 2, 22, tzinfo=UTC), 1, "critical",
            "Outside the day.")  # fmt: skip
    anomaly(tea_shop, "events_hourly", datetime(2026, 12, 3, 13, tzinfo=UTC), 1, "critical",
            "Events 14:00–15:00 were <b>412</b>, about 5× the usual 80.")  # fmt: skip
    period = Period(date(2026, 12, 3), date(2026, 12, 3), berlin)

    data = report_data_compute(shop=tea_shop, kind="daily", period=period)
    text = report_text_render(data, data["findings"])
    html = report_html_render(data, data["findings"], data["charts"])

    summary = data["anomalies"]
    assert (summary["count"], summary["critical"], summary["warning"], summary["info"]) == (
        2, 1, 1, 0,
    )  # fmt: skip
    assert [(a["metric"], a["severity"], a["window_start"]) for a in summary["rows"]] == [
        ("events_hourly", "critical", "2026-12-03T14:00:00+01:00"),
        ("sessions_hourly", "warning", "2026-12-03T00:00:00+01:00"),
    ]
    assert data["findings"][1] == (
        "Critical anomaly at 2026-12-03 14:00–15:00: "
        "Events 14:00–15:00 were <b>412</b>, about 5× the usual 80."
    )
    assert "  [critical] 2026-12-03 14:00–15:00 events_hourly (open): Events 14:00–15:00" in text
    assert "  [warning] 2026-12-03 00:00–01:00 sessions_hourly (open)" in text
    assert "Outside the day" not in text
    assert "<b>412</b>" not in html
    assert "&lt;b&gt;412&lt;/b&gt;" in html
    assert "<td>2026-12-03 14:00–15:00</td>" in html

    quiet = report_data_compute(
        shop=tea_shop, kind="daily", period=Period(date(2026, 12, 1), date(2026, 12, 1), berlin)
    )
    assert quiet["anomalies"] == {"count": 0, "critical": 0, "warning": 0, "info": 0, "rows": []}
    assert not any("anomaly" in finding for finding in quiet["findings"])
    assert "Anomalies (shop-local windows starting in the period)\n  None detected.\n" in (
        report_text_render(quiet, quiet["findings"])
    )


def smtp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Inbox:
    def __init__(self) -> None:
        self.envelopes: list = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server(settings):
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield inbox
    controller.stop()


def test_report_is_emailed_once_through_a_real_smtp_server(tea_shop, smtp_server, celery_eager):
    ReportRecipient.objects.create(shop=tea_shop, email="owner@tea.example")
    ReportRecipient.objects.create(shop=tea_shop, email="weekly@tea.example", is_daily=False)
    ReportRecipient.objects.create(shop=tea_shop, email="daily@tea.example", is_weekly=False)

    sent = report_deliver_task.delay(tea_shop.pk, "daily", "2026-12-03").get()
    again = report_deliver_task.delay(tea_shop.pk, "daily", "2026-12-03").get()

    report = Report.objects.get(shop=tea_shop, kind="daily", first_day=date(2026, 12, 3))
    assert (sent, again, report.recipient_count) == (2, 0, 2)
    assert len(smtp_server.envelopes) == 1
    envelope = smtp_server.envelopes[0]
    assert sorted(envelope.rcpt_tos) == ["daily@tea.example", "owner@tea.example"]
    message = message_from_bytes(envelope.original_content)
    assert message["Subject"] == "<script>alert(1)</script>: Daily report (2026-12-03)"
    parts = {
        part.get_content_type(): part.get_payload(decode=True).decode()
        for part in message.walk()
        if not part.is_multipart()
    }
    assert parts["text/plain"].replace("\r\n", "\n") == report.text
    html = parts["text/html"]
    assert html.count("<svg") == 2
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html
    assert "Green &lt;tea&gt;" in html
    # Nothing to fetch: no src/href attribute, no URL but the SVG namespace.
    assert " src=" not in html
    assert " href=" not in html
    assert html.replace('xmlns="http://www.w3.org/2000/svg"', "").count("http") == 0


@pytest.fixture
def member(tea_shop):
    client = APIClient()
    client.force_authenticate(user=tea_shop.owner)
    return client


def test_reports_api_lists_the_archive_and_returns_json_and_html(tea_shop, member):
    berlin = ZoneInfo("Europe/Berlin")
    for day in (date(2026, 12, 2), date(2026, 12, 3)):
        report_generate(shop=tea_shop, kind="daily", period=Period(day, day, berlin), now=NOW)
    report_generate(
        shop=tea_shop,
        kind="weekly",
        period=Period(date(2026, 11, 30), date(2026, 12, 6), berlin),
        now=NOW,
    )
    newest = Report.objects.get(shop=tea_shop, kind="daily", first_day=date(2026, 12, 3))

    listed = member.get(f"/analytics/reports/?shop={tea_shop.domain}").json()
    weekly = member.get(f"/analytics/reports/?shop={tea_shop.domain}&kind=weekly").json()
    detail = member.get(f"/analytics/reports/{newest.pk}/?shop={tea_shop.domain}").json()
    html = member.get(f"/analytics/reports/{newest.pk}/?shop={tea_shop.domain}&format=html")
    stranger = APIClient()
    stranger.force_authenticate(user=UserFactory())
    hidden = stranger.get(f"/analytics/reports/{newest.pk}/?shop={tea_shop.domain}")

    assert [(r["kind"], r["first_day"]) for r in listed["results"]] == [
        ("daily", "2026-12-03"),
        ("daily", "2026-12-02"),
        ("weekly", "2026-11-30"),
    ]
    assert [r["first_day"] for r in weekly["results"]] == ["2026-11-30"]
    assert detail["text"] == newest.text
    assert detail["data"]["headline"]["revenue"] == "50.50"
    assert html.status_code == 200
    assert html["Content-Type"].startswith("text/html")
    assert html.content.decode() == newest.html
    assert hidden.status_code == 404


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("day=FUTURE", "day", "is in the future"),
        ("day=2026-11-30", "day", "2026-11-30 is before the shop's first event (2026-12-01)"),
        ("day=2026-13-01", "day", "expected YYYY-MM-DD"),
        ("", "day", "required (YYYY-MM-DD)"),
        ("day=2026-12-03&kind=monthly", "kind", "kind"),
    ],
)
def test_report_preview_refuses_bad_days_with_400(tea_shop, member, query, field, message):
    future = (timezone.now() + timedelta(days=2)).date().isoformat()
    query = query.replace("FUTURE", future)

    response = member.get(f"/analytics/reports/preview/?shop={tea_shop.domain}&{query}")

    assert response.status_code == 400
    body = response.json()
    assert list(body["fields"]) == [field]
    assert message in body["detail"]
    assert not Report.objects.exists()


def test_report_preview_computes_without_storing(tea_shop, member):
    url = f"/analytics/reports/preview/?shop={tea_shop.domain}&kind=weekly&day=2026-12-03"

    body = member.get(url).json()

    assert (body["data"]["first"], body["data"]["last"]) == ("2026-11-30", "2026-12-06")
    assert body["data"]["headline"]["orders"] == 2
    assert body["text"].startswith("Weekly report for <script>alert(1)</script>: week 2026-11-30")
    assert not Report.objects.exists()


def test_recipients_are_added_through_the_admin_and_bad_addresses_refused(tea_shop, admin_client):
    response = admin_client.post(
        "/admin/analytics/reportrecipient/add/",
        {"shop": tea_shop.pk, "email": "buyer@tea.example", "is_daily": "on"},
    )

    assert response.status_code == 302
    assert list(ReportRecipient.objects.values_list("email", "is_daily", "is_weekly")) == [
        ("buyer@tea.example", True, False)
    ]
    with pytest.raises(ApplicationError) as refused:
        report_recipient_save(shop=tea_shop, email="not an address", is_daily=True, is_weekly=True)
    assert refused.value.fields == {"email": ["enter a valid email address"]}
    assert ReportRecipient.objects.count() == 1


def test_the_hourly_sweep_builds_and_emails_yesterdays_report_once(db, smtp_server, celery_eager):
    shop = ShopFactory(timezone="Asia/Kolkata", name="Chai")  # UTC+05:30
    yesterday = (timezone.now() - timedelta(hours=1)).astimezone(ZoneInfo(shop.timezone)).date()
    yesterday -= timedelta(days=1)
    noon = datetime(
        yesterday.year, yesterday.month, yesterday.day, 12, tzinfo=ZoneInfo(shop.timezone)
    )
    EventFactory(shop=shop, occurred_at=noon.astimezone(UTC))
    order(shop, "chai-1", noon.astimezone(UTC), [("C1", 2, "3.20")], user_id="u1")
    rollups_rebuild(shop_id=shop.pk, now=timezone.now())
    ReportRecipient.objects.create(shop=shop, email="chai@shop.example", is_weekly=False)

    first = reports_sweep_task.delay().get()
    second = reports_sweep_task.delay().get()

    daily = Report.objects.get(shop=shop, kind="daily")
    assert (daily.first_day, daily.data["headline"]["revenue"]) == (yesterday, "6.40")
    assert daily.sent_at is not None
    # The weekly report is due only when last ISO week held an event, which it may (a Monday).
    weekly = Report.objects.filter(shop=shop, kind="weekly").count()
    assert (first, second) == (1 + weekly, 0)
    assert [e.rcpt_tos for e in smtp_server.envelopes] == [["chai@shop.example"]]


def test_the_archive_reads_a_fixed_number_of_queries(tea_shop, member, django_assert_num_queries):
    berlin = ZoneInfo("Europe/Berlin")
    for day in range(1, 6):
        first = date(2026, 12, day)
        report_generate(shop=tea_shop, kind="daily", period=Period(first, first, berlin), now=NOW)

    # The member's shop, the page's count and its rows (figures, text and HTML deferred),
    # however many.
    with django_assert_num_queries(3):
        body = member.get(f"/analytics/reports/?shop={tea_shop.domain}&page_size=3").json()

    assert (body["count"], len(body["results"])) == (5, 3)
