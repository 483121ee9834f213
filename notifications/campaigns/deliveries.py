"""Every write of the email and webhook channels: a decision's delivery row, sending it once,
the retries, the sweep, and the unsubscribe.

The delivery row is created with its decision (one per decision: the idempotency key). Sending is
at most once: a worker first *claims* the row (a conditional UPDATE pending → sending, committed
on its own) and only then talks to the SMTP server or the receiver; the outcome is recorded on
the claimed row. A row left in `sending` (the worker was killed between its claim and its record)
is never sent again: the sweep marks it `uncertain` once it is older than any send can take, and
it stays visible in the API and the admin. A transient failure (4xx SMTP replies, refused
connections, timeouts; webhook 5xx/429/408 answers) puts the row back to `pending` with
`next_attempt_at` = now + base × 2^(attempts − 1), until the last attempt records `failed`.
A permanent one is `failed` at once: a recipient the SMTP server refuses with a 5xx (a hard
bounce, whose address then joins the shop's suppression list), a message refused at DATA, a
webhook 4xx.
A webhook whose host resolves to a non-public address (clickserver/webhook_guard.py) is
`failed` at once, nothing sent.
docs/campaigns.md, "Email and webhook", has the rules.
"""

import contextlib
import smtplib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
from django.conf import settings
from django.core import signing
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.template.loader import render_to_string

from analytics.alerting import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_compute
from clickserver.errors import ApplicationError
from clickserver.webhook_guard import WebhookRefused, webhook_post
from events.identity import email_hash
from notifications.campaigns import selectors
from notifications.models import (
    Campaign,
    CampaignChannel,
    CampaignDecision,
    CampaignDelivery,
    CampaignStatus,
    DeliveryStatus,
    EmailUnsubscribe,
    SuppressionReason,
)

UNSUBSCRIBE_SALT = "notifications.campaigns.unsubscribe"
DELIVERY_HEADER = "X-Clickserver-Delivery"
RESPONSE_EXCERPT = 1024
ERROR_MAX = 1024
# Answers worth trying again: the receiver is down or busy, or timed out reading.
TRANSIENT_STATUSES = frozenset({408, 429})
LOST_MESSAGE_GRACE = timedelta(seconds=60)
SWEEP_BATCH = 1000


@dataclass(frozen=True, slots=True)
class SweepResult:
    due: list[int]
    uncertain: int


def delivery_create(*, decision: CampaignDecision, campaign: Campaign, now: datetime) -> int:
    """The decision's delivery row, in the decision's transaction; its id, to send on commit.

    The holdout's row is `skipped` at once: both arms get a row, only the treatment is sent.
    """
    delivery = CampaignDelivery.objects.create(
        decision=decision,
        campaign=campaign,
        shop_id=campaign.shop_id,
        channel=campaign.channel,
        status=DeliveryStatus.SKIPPED if decision.is_holdout else DeliveryStatus.PENDING,
        last_error="holdout: nothing sent" if decision.is_holdout else "",
        next_attempt_at=None if decision.is_holdout else now,
        created_at=now,
    )
    return delivery.pk


def deliveries_schedule(*, delivery_ids: list[int]) -> None:
    # Imported here: the tasks module imports the decisions, which import this one.
    from notifications.tasks import campaign_delivery_send_task

    for delivery_id in delivery_ids:
        campaign_delivery_send_task.delay(delivery_id)


def deliveries_schedule_on_commit(delivery_ids: list[int]) -> None:
    if delivery_ids:
        ids = list(delivery_ids)
        transaction.on_commit(lambda: deliveries_schedule(delivery_ids=ids))


def _claim(*, delivery_id: int, now: datetime) -> bool:
    """pending and due → sending, one more attempt, committed before anything is sent.

    A single conditional UPDATE: of two workers (a retry and the sweep's resend) one wins."""
    with transaction.atomic():
        claimed = CampaignDelivery.objects.filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
            pk=delivery_id,
            status=DeliveryStatus.PENDING,
        ).update(status=DeliveryStatus.SENDING, claimed_at=now, attempts=F("attempts") + 1)
    return claimed == 1


def _record(*, delivery: CampaignDelivery, fields: dict[str, Any]) -> None:
    """The outcome, only onto the row this worker claimed (a row marked uncertain meanwhile
    keeps that mark: its outcome is not known to the log)."""
    CampaignDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.SENDING).update(**fields)
    for name, value in fields.items():
        setattr(delivery, name, value)


def unsubscribe_token(*, shop_id: int, person_id: int, address: str) -> str:
    """Signed (SECRET_KEY), without expiry: an old email's link must keep working."""
    return signing.dumps(
        {"s": shop_id, "p": person_id, "e": email_hash(address)}, salt=UNSUBSCRIBE_SALT
    )


def unsubscribe_url(token: str) -> str:
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/notifications/unsubscribe/{token}/"


def _absolute(url: str, *, shop_domain: str) -> str:
    """An email has no site to resolve a same-site path against: the shop's domain is it."""
    if url.startswith("/"):
        return f"https://{shop_domain}{url}"
    return url


def message_id(decision_id: int) -> str:
    """One decision, one Message-ID: a duplicate that did reach a mailbox is threaded as one."""
    host = urlsplit(settings.PUBLIC_BASE_URL).hostname or "clickserver"
    return f"<campaign-decision-{decision_id}@{host}>"


def email_build(*, decision: CampaignDecision, address: str) -> EmailMultiAlternatives:
    """The decision's email: its stored (already rendered) text in a plain and an HTML part,
    the unsubscribe link in both and in the List-Unsubscribe headers (RFC 2369, RFC 8058)."""
    shop = decision.shop
    link = unsubscribe_url(
        unsubscribe_token(shop_id=shop.pk, person_id=decision.person_id, address=address)
    )
    context = {
        "title": decision.title,
        "body": decision.body,
        "cta_url": _absolute(decision.cta_url, shop_domain=shop.domain),
        "cta_text": decision.cta_text or "Open",
        "shop_name": shop.name or shop.domain,
        "unsubscribe_url": link,
    }
    message = EmailMultiAlternatives(
        subject=decision.title,
        body=render_to_string("notifications/campaign_email.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[address],
        headers={
            "Message-ID": message_id(decision.pk),
            "List-Unsubscribe": f"<{link}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    message.attach_alternative(
        render_to_string("notifications/campaign_email.html", context), "text/html"
    )
    return message


def webhook_payload(*, decision: CampaignDecision, delivery_id: int) -> dict[str, Any]:
    campaign = decision.campaign
    return {
        "type": "campaign.decision",
        "delivery": delivery_id,
        "decision": decision.pk,
        "shop": decision.shop.domain,
        "campaign": {"id": campaign.pk, "key": campaign.key, "name": campaign.name},
        "experiment": {"key": campaign.experiment.key, "phase": decision.phase},
        "arm": decision.arm,
        "person": {
            "id": decision.person_id,
            "user_id": decision.person.user_id,
            "anonymous_id": decision.anonymous_id,
            "unit_id": decision.unit_id,
        },
        "session": decision.session_id,
        "content": {
            "title": decision.title,
            "body": decision.body,
            "cta_url": decision.cta_url,
            "cta_text": decision.cta_text,
            "discount_code": decision.discount_code,
        },
        "reason": decision.reason,
        "score": decision.score,
        "decided_at": decision.created_at.isoformat(),
    }


def _webhook_send(*, delivery: CampaignDelivery) -> tuple[int, str]:
    decision, campaign = delivery.decision, delivery.campaign
    body = orjson.dumps(webhook_payload(decision=decision, delivery_id=delivery.pk))
    timestamp = int(time.time())
    # Only the excerpt kept in the log is read of whatever the receiver answers.
    answer = webhook_post(
        campaign.webhook_url,
        body=body,
        headers={
            "Content-Type": "application/json",
            "User-Agent": "clickserver-campaigns/1",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature_compute(
                secret=campaign.webhook_secret, timestamp=timestamp, body=body
            ),
            DELIVERY_HEADER: str(delivery.pk),
            # Stable across attempts: a receiver may drop a request it already processed.
            "Idempotency-Key": f"campaign-decision-{decision.pk}",
        },
        timeout=settings.CAMPAIGN_WEBHOOK_TIMEOUT_SECONDS,
        read_limit=RESPONSE_EXCERPT * 4,
    )
    text = answer.head.decode(answer.encoding or "utf-8", errors="replace")
    return answer.status, text[:RESPONSE_EXCERPT]


def _skip_reason(delivery: CampaignDelivery) -> tuple[str, str]:
    """(why nothing is sent, the address to send to); the reason is "" when it is sent."""
    campaign = delivery.campaign
    if campaign.status != CampaignStatus.RUNNING:
        return f"campaign {campaign.status} before sending", ""
    if delivery.channel != CampaignChannel.EMAIL:
        return "", ""
    decision = delivery.decision
    address = selectors.persons_emailable(shop=decision.shop, person_ids={decision.person_id}).get(
        decision.person_id, ""
    )
    if not address:
        return "no address to email (not stored, unsubscribed or hard-bounced)", ""
    return "", address


def smtp_is_transient(exc: Exception) -> bool:
    """Whether trying again later may deliver (RFC 5321: a 4xx reply is transient, a 5xx one
    permanent). Permanent: the recipient refused (a hard bounce) or the message refused at DATA
    (its content, its size). Transient: 4xx replies, lost connections and timeouts, and a 5xx
    for our sender or our login, which is the server's configuration, fixed by an operator
    while the retries wait."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return any(code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPDataError):
        return exc.smtp_code < 500
    return True


def address_bounced(*, decision: CampaignDecision, address: str, now: datetime) -> None:
    """Put a hard-bounced address on the shop's suppression list (an unsubscribe already there
    stays as it is): no campaign emails it or decides for it again (`persons_emailable`)."""
    with contextlib.suppress(IntegrityError), transaction.atomic():
        EmailUnsubscribe.objects.get_or_create(
            shop_id=decision.shop_id,
            email_hash=email_hash(address),
            defaults={
                "person_id": decision.person_id,
                "reason": SuppressionReason.BOUNCED,
                "unsubscribed_at": now,
            },
        )


def campaign_delivery_send(*, delivery_id: int, now: datetime) -> CampaignDelivery:
    """Send one due pending delivery, at most once, and record the attempt.

    Returns the row as recorded; a row that is not pending or not due yet is returned as it is
    (a duplicate message, a retry the sweep already sent, a holdout).
    """
    if not _claim(delivery_id=delivery_id, now=now):
        return CampaignDelivery.objects.get(pk=delivery_id)
    delivery = CampaignDelivery.objects.select_related(
        "decision__shop", "decision__person", "campaign__experiment"
    ).get(pk=delivery_id)
    delivery.decision.campaign = delivery.campaign
    reason, address = _skip_reason(delivery)
    if reason:
        _record(
            delivery=delivery,
            fields={
                "status": DeliveryStatus.SKIPPED,
                "last_error": reason,
                "next_attempt_at": None,
            },
        )
        return delivery
    outcome: dict[str, Any] = {}
    error, is_transient = "", False
    if delivery.channel == CampaignChannel.EMAIL:
        try:
            email_build(decision=delivery.decision, address=address).send()
        except (smtplib.SMTPException, OSError) as exc:
            # OSError: refused connections and timeouts (socket.timeout is one).
            error = f"{type(exc).__name__}: {exc}"
            is_transient = smtp_is_transient(exc)
            if isinstance(exc, smtplib.SMTPRecipientsRefused) and not is_transient:
                address_bounced(decision=delivery.decision, address=address, now=now)
                error = f"hard bounce, the address is not emailed again: {error}"
        else:
            outcome["message_id"] = message_id(delivery.decision_id)
    else:
        try:
            code, excerpt = _webhook_send(delivery=delivery)
        except WebhookRefused as exc:
            # Permanent: the address will not become public by trying again.
            error = f"refused: {exc}"
        except requests.RequestException as exc:
            error, is_transient = f"{type(exc).__name__}: {exc}", True
        else:
            outcome = {"response_status": code, "response_body": excerpt}
            if not 200 <= code < 300:
                error = f"the receiver answered {code}"
                is_transient = code >= 500 or code in TRANSIENT_STATUSES
    if not error:
        outcome |= {"status": DeliveryStatus.SENT, "sent_at": now, "last_error": ""}
    elif is_transient and delivery.attempts < settings.CAMPAIGN_DELIVERY_ATTEMPTS:
        delay = settings.CAMPAIGN_DELIVERY_BACKOFF_SECONDS * 2 ** (delivery.attempts - 1)
        outcome |= {
            "status": DeliveryStatus.PENDING,
            "last_error": error[:ERROR_MAX],
            "next_attempt_at": now + timedelta(seconds=delay),
        }
    else:
        outcome |= {"status": DeliveryStatus.FAILED, "last_error": error[:ERROR_MAX]}
    if outcome["status"] != DeliveryStatus.PENDING:
        outcome["next_attempt_at"] = None
    _record(delivery=delivery, fields=outcome)
    return delivery


def campaign_deliveries_sweep(*, now: datetime) -> SweepResult:
    """Beat: rows claimed longer ago than any send can take become `uncertain` (never re-sent);
    pending rows due for a while (their message lost, or a retry whose countdown a restart
    dropped) are returned to be sent."""
    stale = now - timedelta(seconds=settings.CAMPAIGN_DELIVERY_STALE_SECONDS)
    uncertain = CampaignDelivery.objects.filter(
        status=DeliveryStatus.SENDING, claimed_at__lt=stale
    ).update(
        status=DeliveryStatus.UNCERTAIN,
        next_attempt_at=None,
        last_error="the worker was lost between its claim and its record: it may have been "
        "sent, so it is not sent again (at most once)",
    )
    due = list(
        CampaignDelivery.objects.filter(
            status=DeliveryStatus.PENDING, next_attempt_at__lte=now - LOST_MESSAGE_GRACE
        )
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    return SweepResult(due=due, uncertain=uncertain)


def email_unsubscribe(*, token: str, now: datetime) -> EmailUnsubscribe:
    """Record the signed link's unsubscribe (idempotent: a second click keeps the first time).

    Its pending email deliveries are skipped when their turn comes (the send re-checks)."""
    try:
        data = signing.loads(token, salt=UNSUBSCRIBE_SALT)
        shop_id, person_id, hashed = int(data["s"]), int(data["p"]), str(data["e"])
    except (signing.BadSignature, KeyError, TypeError, ValueError) as error:
        raise ApplicationError(
            "This unsubscribe link is not valid.", fields={"token": ["invalid"]}
        ) from error
    if not selectors.shop_exists(shop_id=shop_id):
        # A link of a shop deleted since: nobody is emailed for it any more.
        raise ApplicationError("This unsubscribe link is not valid.", fields={"token": ["gone"]})
    existing = EmailUnsubscribe.objects.filter(shop_id=shop_id, email_hash=hashed).first()
    if existing is not None and existing.reason != SuppressionReason.BOUNCED:
        return existing
    person_exists = selectors.person_exists(shop_id=shop_id, person_id=person_id)
    if existing is not None:
        # The address bounced since this email; the person's own word now stops them at any
        # address, as an unsubscribe does.
        existing.reason = SuppressionReason.UNSUBSCRIBED
        existing.person_id = person_id if person_exists else existing.person_id
        existing.unsubscribed_at = now
        existing.save(update_fields=["reason", "person", "unsubscribed_at"])
        return existing
    try:
        with transaction.atomic():
            return EmailUnsubscribe.objects.create(
                shop_id=shop_id,
                person_id=person_id if person_exists else None,
                email_hash=hashed,
                unsubscribed_at=now,
            )
    except IntegrityError as error:
        if "uniq_unsubscribe_email" not in str(error):
            raise
        return EmailUnsubscribe.objects.get(shop_id=shop_id, email_hash=hashed)
