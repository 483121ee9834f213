"""Alert rules and their deliveries: which anomalies go where, the cooldown, and sending.

A rule matches an anomaly by kind, metric and minimum severity (or, for a threshold rule, only
the anomalies its own threshold raised). Each (rule, anomaly) is delivered at most once (once
more if re-judging turned a drop into a spike or back); within
a rule's cooldown a second anomaly of the same metric is logged as `suppressed` instead of sent.
Sending is a task per delivery, retried with backoff on transient failures (connection errors,
timeouts, 5xx and 429 answers, SMTP errors); a 4xx answer fails it at once, and so does a
webhook whose host resolves to a non-public address (clickserver/webhook_guard.py).
"""

import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.core.validators import validate_email
from django.db import transaction

from analytics.alerting import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AlertContent,
    alert_subject,
    email_bodies,
    signature_compute,
    webhook_payload,
)
from analytics.models import (
    SEVERITY_RANK,
    AlertChannel,
    AlertDelivery,
    AlertRule,
    Anomaly,
    AnomalyKind,
    AnomalyStatus,
    DeliveryStatus,
    Severity,
)
from analytics.selectors.detection import METRICS, SERIES_METRICS
from clickserver.errors import ApplicationError
from clickserver.webhook_guard import WebhookRefused, webhook_post, webhook_url_validate
from events.models import Shop

RULE_FIELDS = (
    "name",
    "is_active",
    "kinds",
    "metrics",
    "min_severity",
    "threshold_metric",
    "threshold_direction",
    "threshold_value",
    "channel",
    "emails",
    "webhook_url",
    "cooldown_minutes",
)
MAX_EMAILS = 20
MAX_COOLDOWN_MINUTES = 7 * 24 * 60


class DeliveryRetry(Exception):
    """A transient failure: the task tries again later."""


def _list_of(value: Any, *, allowed: tuple[str, ...], name: str, errors: dict) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        errors[name] = ["Expected a list of strings."]
        return []
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        errors[name] = [f"Unknown: {', '.join(unknown)}. Expected some of: {', '.join(allowed)}."]
    return sorted(set(value))


def alert_rule_clean(data: Any, *, rule: AlertRule | None = None) -> dict[str, Any]:
    """The rule's fields from request data (a partial update keeps `rule`'s other fields);
    every problem is reported at once in `fields`, and nothing is saved when there is one."""
    if not isinstance(data, dict):
        raise ApplicationError("Expected a JSON object.")
    unknown = sorted(set(data) - set(RULE_FIELDS))
    errors: dict[str, list[str]] = {name: ["Unknown field."] for name in unknown}
    current = {name: getattr(rule, name) for name in RULE_FIELDS} if rule else {}
    merged = {**current, **{k: v for k, v in data.items() if k in RULE_FIELDS}}
    clean: dict[str, Any] = {}

    name = merged.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 128:
        errors["name"] = ["Required: up to 128 characters."]
    else:
        clean["name"] = name.strip()
    is_active = merged.get("is_active", True)
    if not isinstance(is_active, bool):
        errors["is_active"] = ["Expected true or false."]
    clean["is_active"] = is_active
    clean["kinds"] = _list_of(
        merged.get("kinds", []), allowed=tuple(AnomalyKind.values), name="kinds", errors=errors
    )
    clean["metrics"] = _list_of(
        merged.get("metrics", []), allowed=METRICS, name="metrics", errors=errors
    )
    severity = merged.get("min_severity", Severity.WARNING)
    if severity not in Severity.values:
        errors["min_severity"] = [f"Expected one of: {', '.join(Severity.values)}."]
    clean["min_severity"] = severity

    threshold_metric = merged.get("threshold_metric", "") or ""
    clean["threshold_metric"] = threshold_metric
    clean["threshold_direction"] = ""
    clean["threshold_value"] = None
    if threshold_metric:
        if threshold_metric not in SERIES_METRICS:
            errors["threshold_metric"] = [
                f"Unknown metric. Expected one of: {', '.join(SERIES_METRICS)}."
            ]
        direction = merged.get("threshold_direction") or "above"
        if direction not in ("above", "below"):
            errors["threshold_direction"] = ["Expected above or below."]
        clean["threshold_direction"] = direction
        value = merged.get("threshold_value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            errors["threshold_value"] = ["Required with threshold_metric: a number."]
        elif value < 0:
            errors["threshold_value"] = ["Must not be negative."]
        else:
            clean["threshold_value"] = float(value)
    elif merged.get("threshold_value") is not None and "threshold_value" in data:
        errors["threshold_value"] = ["Only with threshold_metric."]

    channel = merged.get("channel")
    clean["channel"] = channel
    clean["emails"], clean["webhook_url"] = [], ""
    if channel == AlertChannel.EMAIL:
        emails = merged.get("emails") or []
        if not isinstance(emails, list) or not emails or len(emails) > MAX_EMAILS:
            errors["emails"] = [f"Required for email: a list of 1 to {MAX_EMAILS} addresses."]
        else:
            bad = []
            for address in emails:
                try:
                    validate_email(address)
                except (ValidationError, TypeError):
                    bad.append(str(address))
            if bad:
                errors["emails"] = [f"Not an email address: {', '.join(bad)}."]
            clean["emails"] = sorted(set(map(str, emails)))
    elif channel == AlertChannel.WEBHOOK:
        url = merged.get("webhook_url") or ""
        if not url:
            errors["webhook_url"] = ["Required for webhook: an http(s) URL."]
        elif isinstance(url, str) and len(url) > 1024:
            errors["webhook_url"] = ["At most 1024 characters."]
        else:
            try:
                webhook_url_validate(url)
            except WebhookRefused as refusal:
                errors["webhook_url"] = [f"{str(refusal)[:1].upper()}{str(refusal)[1:]}."]
        clean["webhook_url"] = url
    else:
        errors["channel"] = [f"Unknown channel. Expected one of: {', '.join(AlertChannel.values)}."]

    cooldown = merged.get("cooldown_minutes", 60)
    if isinstance(cooldown, bool) or not isinstance(cooldown, int):
        errors["cooldown_minutes"] = ["Expected a whole number of minutes."]
    elif not 0 <= cooldown <= MAX_COOLDOWN_MINUTES:
        errors["cooldown_minutes"] = [f"Must be between 0 and {MAX_COOLDOWN_MINUTES}."]
    clean["cooldown_minutes"] = cooldown
    if errors:
        raise ApplicationError("Invalid alert rule.", fields=errors)
    return clean


def alert_rule_create(*, shop: Shop, data: Any) -> AlertRule:
    clean = alert_rule_clean(data)
    secret = secrets.token_hex(32) if clean["channel"] == AlertChannel.WEBHOOK else ""
    return AlertRule.objects.create(shop=shop, secret=secret, **clean)


# The demo's rule (scripts/demo.py): every warning or critical anomaly to the owner's address,
# with a short cooldown so that pressing "Generate anomalies" again a few minutes later tells
# again.
DEMO_RULE_NAME = "Demo: warnings and worse by email"
DEMO_RULE_COOLDOWN_MINUTES = 5


def alert_rule_demo_ensure(*, shop: Shop, email: str) -> AlertRule:
    """The demo shop's email rule to `email`, created once (reruns of the demo keep one)."""
    rule = AlertRule.objects.filter(shop=shop, name=DEMO_RULE_NAME).first()
    data = {
        "name": DEMO_RULE_NAME,
        "channel": AlertChannel.EMAIL,
        "emails": [email],
        "min_severity": Severity.WARNING,
        "cooldown_minutes": DEMO_RULE_COOLDOWN_MINUTES,
    }
    if rule is None:
        return alert_rule_create(shop=shop, data=data)
    return alert_rule_update(rule=rule, data=data)


def alert_rule_update(*, rule: AlertRule, data: Any) -> AlertRule:
    clean = alert_rule_clean(data, rule=rule)
    for name, value in clean.items():
        setattr(rule, name, value)
    if rule.channel == AlertChannel.WEBHOOK and not rule.secret:
        rule.secret = secrets.token_hex(32)
    rule.save()
    return rule


def alert_rule_delete(*, rule: AlertRule) -> None:
    rule.delete()


def rule_matches(rule: AlertRule, anomaly: Anomaly) -> bool:
    if anomaly.kind == AnomalyKind.THRESHOLD:
        # A threshold anomaly belongs to the rule that set the threshold, and to no other.
        return anomaly.subject == f"rule:{rule.pk}"
    if rule.threshold_metric:
        return False
    if rule.kinds and anomaly.kind not in rule.kinds:
        return False
    if rule.metrics and anomaly.metric not in rule.metrics:
        return False
    return SEVERITY_RANK[anomaly.severity] >= SEVERITY_RANK[rule.min_severity]


@dataclass(frozen=True, slots=True)
class DispatchResult:
    pending: list[int]
    suppressed: int


def alerts_dispatch(*, anomaly_ids: list[int], now: datetime) -> DispatchResult:
    """Log a delivery for every (matching rule, open anomaly) not logged yet; send on commit."""
    pending, suppressed = [], 0
    with transaction.atomic():
        anomalies = list(
            Anomaly.objects.filter(pk__in=anomaly_ids, status=AnomalyStatus.OPEN).order_by("pk")
        )
        # Each shop's rules read (and locked) once: a detection run over a bot farm opens
        # thousands of anomalies, and a query per anomaly took 12-17 s for a shop with no rule.
        rules = {
            shop_id: list(
                AlertRule.objects.select_for_update()
                .filter(shop_id=shop_id, is_active=True)
                .order_by("pk")
            )
            for shop_id in sorted({anomaly.shop_id for anomaly in anomalies})
        }
        for anomaly in anomalies:
            for rule in rules[anomaly.shop_id]:
                if not rule_matches(rule, anomaly):
                    continue
                if AlertDelivery.objects.filter(
                    rule=rule, anomaly=anomaly, direction=anomaly.direction
                ).exists():
                    continue
                # A cooldown of 0 is none; tested as such, because a concurrent dispatch that
                # took its `now` a moment earlier would otherwise see this one's rows as later.
                in_cooldown = (
                    rule.cooldown_minutes > 0
                    and AlertDelivery.objects.filter(
                        rule=rule,
                        metric=anomaly.metric,
                        status__in=(DeliveryStatus.PENDING, DeliveryStatus.SENT),
                        created_at__gt=now - timedelta(minutes=rule.cooldown_minutes),
                    ).exists()
                )
                delivery = AlertDelivery.objects.create(
                    rule=rule,
                    anomaly=anomaly,
                    shop_id=anomaly.shop_id,
                    metric=anomaly.metric,
                    direction=anomaly.direction,
                    channel=rule.channel,
                    status=DeliveryStatus.SUPPRESSED if in_cooldown else DeliveryStatus.PENDING,
                    error="within the rule's cooldown for this metric" if in_cooldown else "",
                    created_at=now,
                )
                if in_cooldown:
                    suppressed += 1
                else:
                    pending.append(delivery.pk)
        if pending:
            ids = list(pending)
            transaction.on_commit(lambda: alert_deliveries_schedule(delivery_ids=ids))
    return DispatchResult(pending=pending, suppressed=suppressed)


def alert_deliveries_schedule(*, delivery_ids: list[int]) -> None:
    # Imported here: the tasks module imports this one.
    from analytics.tasks import alert_deliver_task

    for delivery_id in delivery_ids:
        alert_deliver_task.delay(delivery_id)


def alert_content(delivery: AlertDelivery) -> AlertContent:
    anomaly, shop = delivery.anomaly, delivery.anomaly.shop
    query = urlencode({"shop": shop.domain})
    return AlertContent(
        shop_name=shop.name or shop.domain,
        shop_domain=shop.domain,
        rule_name=delivery.rule.name,
        anomaly_id=anomaly.pk,
        kind=anomaly.kind,
        metric=anomaly.metric,
        severity=anomaly.severity,
        direction=anomaly.direction,
        window_start=anomaly.window_start.isoformat(),
        window_end=anomaly.window_end.isoformat(),
        observed=anomaly.observed,
        expected=anomaly.expected,
        band_low=anomaly.band_low,
        band_high=anomaly.band_high,
        explanation=anomaly.explanation,
        url=f"{settings.PUBLIC_BASE_URL.rstrip('/')}/alerts/?{query}",
    )


def _webhook_send(rule: AlertRule, content: AlertContent) -> int:
    body = orjson.dumps(webhook_payload(content))
    timestamp = int(time.time())
    answer = webhook_post(
        rule.webhook_url,
        body=body,
        headers={
            "Content-Type": "application/json",
            "User-Agent": "clickserver-alerts/1",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature_compute(secret=rule.secret, timestamp=timestamp, body=body),
        },
        timeout=settings.ALERT_WEBHOOK_TIMEOUT_SECONDS,
        read_limit=0,
    )
    return answer.status


def _email_send(rule: AlertRule, content: AlertContent) -> None:
    text, html = email_bodies(content)
    message = EmailMultiAlternatives(
        subject=alert_subject(content),
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=list(rule.emails),
    )
    message.attach_alternative(html, "text/html")
    message.send()


def alert_deliver(*, delivery_id: int, now: datetime) -> AlertDelivery:
    """Send one pending delivery and log the attempt. Raises DeliveryRetry on a transient
    failure while attempts are left (the task retries); a permanent one fails it."""
    delivery = AlertDelivery.objects.select_related("rule", "anomaly__shop").get(pk=delivery_id)
    if delivery.status != DeliveryStatus.PENDING:
        return delivery  # sent already (a duplicate message) or suppressed
    content = alert_content(delivery)
    delivery.attempts += 1
    transient = False
    try:
        if delivery.channel == AlertChannel.WEBHOOK:
            code = _webhook_send(delivery.rule, content)
            delivery.response_code = code
            if 200 <= code < 300:
                delivery.status, delivery.sent_at, delivery.error = DeliveryStatus.SENT, now, ""
            else:
                delivery.error = f"the receiver answered {code}"
                transient = code >= 500 or code == 429
                if not transient:
                    delivery.status = DeliveryStatus.FAILED
        else:
            _email_send(delivery.rule, content)
            delivery.status, delivery.sent_at, delivery.error = DeliveryStatus.SENT, now, ""
    except WebhookRefused as error:
        # Permanent: the address will not become public by trying again.
        delivery.error = f"refused: {error}"[:1024]
        delivery.status = DeliveryStatus.FAILED
    except (requests.RequestException, OSError) as error:
        # OSError covers smtplib's SMTPException and refused connections.
        delivery.error = f"{type(error).__name__}: {error}"[:1024]
        transient = True
    if transient and delivery.attempts >= settings.ALERT_DELIVERY_ATTEMPTS:
        delivery.status = DeliveryStatus.FAILED
        transient = False
    delivery.save(update_fields=["status", "attempts", "response_code", "error", "sent_at"])
    if transient:
        raise DeliveryRetry(delivery.error)
    return delivery
