"""Alert delivery against real receivers: a local SMTP server (aiosmtpd) and a local HTTP
server in a thread that verifies the HMAC signature (both fixtures in the root conftest.py);
dedup, cooldown, retries, the log."""

import email
import json
import time
from datetime import UTC, datetime, timedelta
from email import policy

import pytest

from analytics.alerting import signature_verify
from analytics.models import AlertDelivery, Anomaly, DeliveryStatus
from analytics.services.alerts import (
    DeliveryRetry,
    alert_deliver,
    alert_rule_create,
    alerts_dispatch,
)
from analytics.services.detection import anomalies_detect
from analytics.tests.rollup_history import hour_set, rollup_history_write
from analytics.tests.test_anomalies_api import anomaly

NOW = datetime(2026, 3, 4, 10, 5, tzinfo=UTC)

pytestmark = pytest.mark.django_db


def webhook_rule(shop, receiver, **fields):
    rule = alert_rule_create(
        shop=shop,
        data={"name": "Hook", "channel": "webhook", "webhook_url": receiver.url, **fields},
    )
    receiver.secret = rule.secret
    return rule


def test_email_through_a_real_smtp_server(shop, smtp_server, settings):
    settings.PUBLIC_BASE_URL = "https://analytics.example.com"
    alert_rule_create(
        shop=shop,
        data={"name": "Ops", "channel": "email", "emails": ["ops@example.com", "me@example.com"]},
    )
    row = anomaly(shop, explanation="Sessions were 80 <b>not bold</b>, about 8.0× the usual 10.")
    pending = alerts_dispatch(anomaly_ids=[row.pk], now=NOW).pending
    delivery = alert_deliver(delivery_id=pending[0], now=NOW)
    assert delivery.status == DeliveryStatus.SENT
    assert delivery.attempts == 1
    [(recipients, raw)] = smtp_server.messages
    assert sorted(recipients) == ["me@example.com", "ops@example.com"]
    message = email.message_from_bytes(raw, policy=policy.default)
    assert message["Subject"] == f"[warning] {shop.name}: sessions hourly"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Sessions were 80 <b>not bold</b>" in text
    # Shop and shopper text is escaped in the HTML part.
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html
    assert "<b>" not in html
    assert f"https://analytics.example.com/alerts/?shop={shop.domain}" in text


def test_an_unreachable_smtp_server_is_retried_then_failed(shop, settings, unused_port):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", unused_port  # nobody listens
    settings.ALERT_DELIVERY_ATTEMPTS = 2
    alert_rule_create(shop=shop, data={"name": "Ops", "channel": "email", "emails": ["o@x.io"]})
    [delivery_id] = alerts_dispatch(anomaly_ids=[anomaly(shop).pk], now=NOW).pending
    with pytest.raises(DeliveryRetry):
        alert_deliver(delivery_id=delivery_id, now=NOW)
    delivery = alert_deliver(delivery_id=delivery_id, now=NOW)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts == 2
    assert "ConnectionRefusedError" in delivery.error


def test_webhook_is_signed_slack_compatible_and_retried(shop, receiver):
    rule = webhook_rule(shop, receiver)
    row = anomaly(shop)
    receiver.statuses = [503]
    [delivery_id] = alerts_dispatch(anomaly_ids=[row.pk], now=NOW).pending
    with pytest.raises(DeliveryRetry):
        alert_deliver(delivery_id=delivery_id, now=NOW)
    failed_once = AlertDelivery.objects.get(pk=delivery_id)
    assert failed_once.status == DeliveryStatus.PENDING
    assert failed_once.response_code == 503
    delivery = alert_deliver(delivery_id=delivery_id, now=NOW)
    assert delivery.status == DeliveryStatus.SENT
    assert delivery.attempts == 2
    assert delivery.response_code == 200
    assert [request["verified"] for request in receiver.requests] == [True, True]
    body = json.loads(receiver.requests[-1]["body"])
    assert body["text"].startswith(f"[warning] {shop.name}: sessions hourly")
    assert body["blocks"][0]["type"] == "header"
    assert body["clickserver"]["anomaly_id"] == row.pk
    assert body["clickserver"]["band"] == [5.0, 15.0]
    # A receiver with another secret (or a tampered body) refuses it.
    request = receiver.requests[-1]
    assert not signature_verify(
        secret=rule.secret[::-1], timestamp=str(int(time.time())), signature="v1=00",
        body=request["body"], now=time.time(),
    )  # fmt: skip


def test_a_4xx_answer_fails_at_once(shop, receiver):
    webhook_rule(shop, receiver)
    receiver.statuses = [410]
    [delivery_id] = alerts_dispatch(anomaly_ids=[anomaly(shop).pk], now=NOW).pending
    delivery = alert_deliver(delivery_id=delivery_id, now=NOW)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.response_code == 410


def test_a_webhook_to_a_private_address_fails_at_once_and_sends_nothing(shop, receiver, settings):
    """Saved while the setting allowed it: the send checks again; a refusal is permanent (no
    DeliveryRetry), logged with its reason."""
    webhook_rule(shop, receiver)
    [delivery_id] = alerts_dispatch(anomaly_ids=[anomaly(shop).pk], now=NOW).pending
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False

    delivery = alert_deliver(delivery_id=delivery_id, now=NOW)

    assert (delivery.status, delivery.attempts, delivery.response_code) == (
        DeliveryStatus.FAILED,
        1,
        None,
    )
    assert delivery.error == (
        "refused: 127.0.0.1, a private, loopback, link-local or otherwise non-public address: "
        "webhooks are sent to public addresses only (WEBHOOK_ALLOW_PRIVATE_NETWORKS)"
    )
    assert AlertDelivery.objects.get().status == DeliveryStatus.FAILED
    assert receiver.requests == []


def test_dedup_cooldown_and_matching(shop, receiver):
    webhook_rule(shop, receiver, cooldown_minutes=30, kinds=["traffic"])
    first = anomaly(shop)
    # The same anomaly twice: one delivery.
    assert len(alerts_dispatch(anomaly_ids=[first.pk], now=NOW).pending) == 1
    assert alerts_dispatch(anomaly_ids=[first.pk], now=NOW).pending == []
    # The next hour's anomaly of the same metric, within 30 minutes: logged, not sent.
    second = anomaly(shop, window_start=first.window_start + timedelta(hours=1))
    result = alerts_dispatch(anomaly_ids=[second.pk], now=NOW + timedelta(minutes=10))
    assert result.pending == []
    assert result.suppressed == 1
    # Another metric is not in the cooldown; after it, the same metric goes out again.
    other = anomaly(shop, metric="events_hourly")
    assert len(alerts_dispatch(anomaly_ids=[other.pk], now=NOW + timedelta(minutes=10)).pending)
    third = anomaly(shop, window_start=first.window_start + timedelta(hours=2))
    assert len(alerts_dispatch(anomaly_ids=[third.pk], now=NOW + timedelta(minutes=31)).pending)
    # Info is below the rule's minimum (warning); an order is not a traffic anomaly.
    quiet = anomaly(shop, severity="info", window_start=first.window_start - timedelta(hours=5))
    order = anomaly(shop, kind="order", metric="order_value", subject="#1", severity="critical")
    assert alerts_dispatch(anomaly_ids=[quiet.pk, order.pk], now=NOW + timedelta(hours=2)) == (
        alerts_dispatch(anomaly_ids=[], now=NOW)
    )
    statuses = sorted(AlertDelivery.objects.values_list("status", flat=True))
    assert statuses == ["pending", "pending", "pending", "suppressed"]


def test_acknowledged_anomalies_are_not_alerted(shop, receiver):
    webhook_rule(shop, receiver)
    row = anomaly(shop, status="acknowledged")
    assert alerts_dispatch(anomaly_ids=[row.pk], now=NOW).pending == []


def test_a_threshold_rule_alerts_only_for_itself(
    shop, receiver, celery_eager, django_capture_on_commit_callbacks
):
    rollup_history_write(shop, end=NOW.replace(minute=0))
    rule = webhook_rule(
        shop, receiver, threshold_metric="sessions_hourly", threshold_value=9,
        min_severity="info",
    )  # fmt: skip
    other = webhook_rule(shop, receiver, min_severity="info")
    receiver.secret = rule.secret
    hour_set(shop, NOW.replace(minute=0), session_count=12)
    with django_capture_on_commit_callbacks(execute=True):
        result = anomalies_detect(shop_id=shop.pk, now=NOW)
    row = Anomaly.objects.get(kind="threshold")
    assert row.subject == f"rule:{rule.pk}"
    assert row.observed == 12
    assert row.pk in result.opened
    [delivery] = AlertDelivery.objects.filter(anomaly=row)
    assert delivery.rule_id == rule.pk
    assert delivery.rule_id != other.pk
    assert delivery.status == DeliveryStatus.SENT


def test_detection_to_delivery_end_to_end(
    shop, receiver, celery_eager, django_capture_on_commit_callbacks
):
    """A spike in the rollups → detection → dispatch task → delivery task → a signed webhook
    at a real HTTP receiver, logged as sent."""
    webhook_rule(shop, receiver)
    spike = NOW.replace(minute=0) - timedelta(hours=1)
    rollup_history_write(shop, end=NOW.replace(minute=0))
    hour_set(shop, spike, session_count=90)
    with django_capture_on_commit_callbacks(execute=True):
        anomalies_detect(shop_id=shop.pk, now=NOW)
    delivery = AlertDelivery.objects.get(anomaly__metric="sessions_hourly")
    assert delivery.status == DeliveryStatus.SENT
    assert delivery.response_code == 200
    assert all(request["verified"] for request in receiver.requests)
    sent = [json.loads(request["body"])["clickserver"] for request in receiver.requests]
    assert len(sent) == AlertDelivery.objects.filter(status=DeliveryStatus.SENT).count()
    [hourly] = [body for body in sent if body["metric"] == "sessions_hourly"]
    assert hourly["window_start"] == spike.isoformat()


def test_a_cooldown_of_zero_holds_nothing_back(shop, receiver):
    webhook_rule(shop, receiver, cooldown_minutes=0)
    first = anomaly(shop)
    second = anomaly(shop, window_start=first.window_start + timedelta(hours=1))
    # The second dispatch took its clock a moment before the first one's rows were written.
    assert len(alerts_dispatch(anomaly_ids=[first.pk], now=NOW).pending) == 1
    result = alerts_dispatch(anomaly_ids=[second.pk], now=NOW - timedelta(seconds=1))
    assert len(result.pending) == 1
    assert result.suppressed == 0


def test_a_window_rejudged_from_drop_to_spike_is_told_again(shop, receiver):
    from analytics.services.anomalies import anomalies_store
    from analytics.tests.test_anomalies_detection import stored_in

    webhook_rule(shop, receiver, cooldown_minutes=0)
    first = anomalies_store(shop_id=shop.pk, found=[stored_in(direction="drop")], now=NOW)
    assert len(alerts_dispatch(anomaly_ids=first.opened, now=NOW).pending) == 1
    # Late events: the same window is now a spike. Same row, a second delivery.
    again = anomalies_store(shop_id=shop.pk, found=[stored_in(direction="spike")], now=NOW)
    assert again.opened == []
    assert again.escalated == first.opened
    assert len(alerts_dispatch(anomaly_ids=again.escalated, now=NOW).pending) == 1
    assert sorted(AlertDelivery.objects.values_list("direction", flat=True)) == ["drop", "spike"]
    # Judged a spike once more: nothing new.
    third = anomalies_store(shop_id=shop.pk, found=[stored_in(direction="spike")], now=NOW)
    assert third.escalated == []


def test_the_demo_rule_emails_the_demo_anomalies(
    shop, process_all, celery_eager, django_capture_on_commit_callbacks, mailoutbox
):
    """`make demo`'s rule and its "Generate anomalies" button: the spike, the whale order and
    the bot, through the real pipeline, each end in an email to the owner."""
    from analytics.services.alerts import DEMO_RULE_NAME, alert_rule_demo_ensure
    from analytics.services.rollups import rollups_refresh
    from events.services.ingest import events_ingest
    from events.simulator import Simulator

    now = datetime(2026, 3, 4, 14, 30, tzinfo=UTC)
    alert_rule_demo_ensure(shop=shop, email="owner@demo.example")
    rule = alert_rule_demo_ensure(shop=shop, email="owner@demo.example")  # the demo restarted
    assert list(shop.alert_rules.values_list("name", flat=True)) == [DEMO_RULE_NAME]
    assert (rule.channel, rule.min_severity, rule.emails) == (
        "email", "warning", ["owner@demo.example"],
    )  # fmt: skip
    rollup_history_write(shop, end=now.replace(hour=0, minute=0))
    journeys = Simulator(shop_domain=shop.domain, seed=7, timezone="UTC").anomalies(end=now)
    events = [event for journey in journeys for event in journey]
    events_ingest(shop=shop, events=events, received_at=now, sent_at=now)
    process_all(shop)
    rollups_refresh(shop_id=shop.pk, now=now)

    with django_capture_on_commit_callbacks(execute=True):
        anomalies_detect(shop_id=shop.pk, now=now)

    sent = AlertDelivery.objects.filter(rule=rule, status=DeliveryStatus.SENT)
    assert {"sessions_hourly", "order_value", "bot"} <= set(sent.values_list("metric", flat=True))
    assert len(mailoutbox) == sent.count()
    assert all(message.to == ["owner@demo.example"] for message in mailoutbox)
    subjects = {message.subject for message in mailoutbox}
    assert {
        f"[critical] {shop.name}: sessions hourly",
        f"[critical] {shop.name}: order value",
        f"[critical] {shop.name}: bot",
    } <= subjects
