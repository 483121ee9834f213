"""GET /analytics/anomalies/ (shop-scoped, filters, CSV), acknowledge and resolve; alert rules'
CRUD and its validation (400 in the envelope, nothing saved)."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from analytics.models import AlertRule, Anomaly, AnomalyStatus
from analytics.services.detection import anomalies_detect
from analytics.tests.rollup_history import hour_set, rollup_history_write

HOUR = datetime(2026, 3, 4, 10, tzinfo=UTC)

pytestmark = pytest.mark.django_db


def anomaly(shop, **fields):
    defaults = {
        "kind": "traffic",
        "metric": "sessions_hourly",
        "window_start": HOUR,
        "window_end": HOUR + timedelta(hours=1),
        "observed": 80.0,
        "expected": 10.0,
        "band_low": 5.0,
        "band_high": 15.0,
        "score": 9.0,
        "direction": "spike",
        "severity": "warning",
        "detector": "hour_of_week_mad",
        "explanation": "Sessions were 80, about 8.0× the usual 10.",
        "opened_at": HOUR,
        "updated_at": HOUR,
    }
    return Anomaly.objects.create(shop=shop, **{**defaults, **fields})


def test_list_filters_and_scope(api_client, shop, other_shop):
    spike = anomaly(shop)
    order = anomaly(
        shop, kind="order", metric="order_value", subject="#9", severity="critical",
        window_start=HOUR - timedelta(days=2),
    )  # fmt: skip
    anomaly(other_shop)
    body = api_client.get(f"/analytics/anomalies/?shop={shop.domain}").json()
    assert [row["id"] for row in body["rows"]] == [spike.pk, order.pk]
    assert body["open"] == {"info": 0, "warning": 1, "critical": 1}
    for query, expected in [
        ("severity=critical", [order.pk]),
        ("kind=traffic,bot", [spike.pk]),
        ("metric=order_value", [order.pk]),
        ("since=2026-03-03", [spike.pk]),
        ("until=2026-03-03T00:00:00Z", [order.pk]),
        ("status=resolved", []),
    ]:
        rows = api_client.get(f"/analytics/anomalies/?shop={shop.domain}&{query}").json()["rows"]
        assert [row["id"] for row in rows] == expected, query
    # Another shop's domain is a 404, as a missing one.
    assert api_client.get(f"/analytics/anomalies/?shop={other_shop.domain}").status_code == 404


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("severity=fatal", "severity"),
        ("metric=sessions;drop", "metric"),
        ("status=closed", "status"),
        ("since=yesterday", "since"),
        ("since=2026-03-05&until=2026-03-04", "since"),
        ("limit=0", "limit"),
    ],
)
def test_bad_filters_are_400_in_the_envelope(api_client, shop, query, field):
    response = api_client.get(f"/analytics/anomalies/?shop={shop.domain}&{query}")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert field in response.json()["fields"]


def test_csv(api_client, shop):
    anomaly(shop, explanation='Sessions "quoted", with a comma')
    response = api_client.get(f"/analytics/anomalies/?shop={shop.domain}&format=csv")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="anomalies.csv"'
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert rows[0]["metric"] == "sessions_hourly"
    assert rows[0]["explanation"] == 'Sessions "quoted", with a comma'
    assert rows[0]["band_high"] == "15.0"


def test_acknowledge_then_resolve(api_client, user, shop, other_shop):
    row = anomaly(shop)
    foreign = anomaly(other_shop)
    response = api_client.post(f"/analytics/anomalies/{row.pk}/acknowledge/")
    assert response.status_code == 200
    assert response.json()["status"] == "acknowledged"
    row.refresh_from_db()
    assert row.acknowledged_by == user
    assert row.acknowledged_at is not None
    assert api_client.post(f"/analytics/anomalies/{row.pk}/resolve/").json()["status"] == (
        "resolved"
    )
    again = api_client.post(f"/analytics/anomalies/{row.pk}/acknowledge/")
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"
    # Another shop's anomaly is not found, and untouched.
    assert api_client.post(f"/analytics/anomalies/{foreign.pk}/resolve/").status_code == 404
    foreign.refresh_from_db()
    assert foreign.status == AnomalyStatus.OPEN


def test_chart_draws_the_detectors_band(api_client, shop):
    rollup_history_write(shop, end=HOUR + timedelta(hours=2))
    hour_set(shop, HOUR, session_count=80)
    anomalies_detect(shop_id=shop.pk, now=HOUR + timedelta(hours=1, minutes=5))
    row = Anomaly.objects.get(shop=shop, metric="sessions_hourly", window_start=HOUR)
    body = api_client.get(f"/analytics/anomalies/{row.pk}/chart/").json()
    point = next(p for p in body["points"] if p["at"] == HOUR.isoformat())
    assert point["observed"] == 80
    assert point["expected"] == 10
    assert point["high"] == pytest.approx(row.band_high)
    assert point["low"] == pytest.approx(row.band_low)
    assert len(body["points"]) >= 48


RULE = {"name": "Spikes to the team", "channel": "email", "emails": ["ops@example.com"]}


def test_rule_crud(api_client, shop):
    created = api_client.post(
        f"/analytics/alert_rules/?shop={shop.domain}",
        {**RULE, "kinds": ["traffic"], "min_severity": "critical"},
        format="json",
    )
    assert created.status_code == 201
    rule = created.json()
    assert rule["kinds"] == ["traffic"]
    assert rule["cooldown_minutes"] == 60
    changed = api_client.patch(
        f"/analytics/alert_rules/{rule['id']}/",
        {"channel": "webhook", "webhook_url": "https://hooks.example.com/x"},
        format="json",
    )
    assert changed.status_code == 200
    assert changed.json()["channel"] == "webhook"
    assert len(changed.json()["secret"]) == 64
    assert changed.json()["emails"] == []
    listed = api_client.get(f"/analytics/alert_rules/?shop={shop.domain}").json()["rows"]
    assert [r["id"] for r in listed] == [rule["id"]]
    assert api_client.delete(f"/analytics/alert_rules/{rule['id']}/").status_code == 204
    assert not AlertRule.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**RULE, "metrics": ["sessions_hourly", "visits"]}, "metrics"),
        ({**RULE, "kinds": ["weather"]}, "kinds"),
        ({**RULE, "channel": "sms"}, "channel"),
        ({**RULE, "threshold_metric": "revenue_daily", "threshold_value": -5}, "threshold_value"),
        ({**RULE, "threshold_metric": "temperature", "threshold_value": 5}, "threshold_metric"),
        ({**RULE, "cooldown_minutes": -1}, "cooldown_minutes"),
        ({**RULE, "emails": ["not-an-address"]}, "emails"),
        ({**RULE, "channel": "webhook"}, "webhook_url"),
        ({**RULE, "channel": "webhook", "webhook_url": "ftp://x.example.com/"}, "webhook_url"),
        ({**RULE, "min_severity": "fatal"}, "min_severity"),
        ({**RULE, "colour": "red"}, "colour"),
    ],
)
def test_bad_rules_are_400_and_save_nothing(api_client, shop, body, field):
    response = api_client.post(f"/analytics/alert_rules/?shop={shop.domain}", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert field in response.json()["fields"]
    assert not AlertRule.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.0.0.1/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[fe80::1%eth0]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "https://internal.example.com/hook",  # resolves to 127.0.0.1 (the dns fixture)
    ],
)
def test_a_webhook_to_a_private_address_is_400_and_saves_nothing(api_client, shop, dns, url):
    dns.answers["internal.example.com"] = ["127.0.0.1"]

    response = api_client.post(
        f"/analytics/alert_rules/?shop={shop.domain}",
        {**RULE, "channel": "webhook", "webhook_url": url},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    [message] = response.json()["fields"]["webhook_url"]
    assert message.endswith(
        "webhooks are sent to public addresses only (WEBHOOK_ALLOW_PRIVATE_NETWORKS)."
    )
    assert not AlertRule.objects.exists()


def test_a_public_webhook_is_saved_and_the_setting_allows_a_private_one(
    api_client, shop, dns, settings
):
    public = api_client.post(
        f"/analytics/alert_rules/?shop={shop.domain}",
        {**RULE, "channel": "webhook", "webhook_url": "https://93.184.216.34/hook"},
        format="json",
    )
    path = f"/analytics/alert_rules/{public.json()['id']}/"
    refused = api_client.patch(path, {"webhook_url": "http://192.168.1.1/"}, format="json")
    kept = AlertRule.objects.get().webhook_url
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    allowed = api_client.patch(path, {"webhook_url": "http://192.168.1.1/"}, format="json")

    assert public.status_code == 201
    assert (refused.status_code, refused.json()["fields"]) == (
        400,
        {
            "webhook_url": [
                "192.168.1.1, a private, loopback, link-local or otherwise non-public address: "
                "webhooks are sent to public addresses only (WEBHOOK_ALLOW_PRIVATE_NETWORKS)."
            ]
        },
    )
    assert kept == "https://93.184.216.34/hook"
    assert (allowed.status_code, allowed.json()["webhook_url"]) == (200, "http://192.168.1.1/")


def test_a_bad_update_changes_nothing(api_client, shop):
    rule = api_client.post(
        f"/analytics/alert_rules/?shop={shop.domain}", RULE, format="json"
    ).json()
    response = api_client.patch(
        f"/analytics/alert_rules/{rule['id']}/",
        {"name": "renamed", "cooldown_minutes": -3},
        format="json",
    )
    assert response.status_code == 400
    assert AlertRule.objects.get().name == RULE["name"]


def test_another_shops_rule_is_not_found(api_client, other_shop):
    from analytics.services.alerts import alert_rule_create

    rule = alert_rule_create(shop=other_shop, data=RULE)
    assert api_client.get(f"/analytics/alert_rules/{rule.pk}/").status_code == 404
    assert api_client.delete(f"/analytics/alert_rules/{rule.pk}/").status_code == 404
    assert AlertRule.objects.filter(pk=rule.pk).exists()
