"""Campaign email and webhook deliveries against real receivers: a local SMTP server (aiosmtpd)
and a local HTTP server in a thread (both in the root conftest.py). Once per person per cap
window, both parts, the unsubscribe link without login, retries with backoff, a recorded failure,
nothing sent twice after a worker is killed mid-send, the signed webhook, the API and its 400s."""

import asyncio
import email
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from events.models import ConsentMode, ShopMembership
from events.tests.factories import EventFactory, PersonFactory, UserFactory
from notifications import tasks
from notifications.campaigns import decisions, deliveries, results, services
from notifications.campaigns.rules import ContentIn
from notifications.models import (
    Campaign,
    CampaignDecision,
    CampaignDelivery,
    DeliveryStatus,
    EmailUnsubscribe,
    Experiment,
)
from notifications.tests.factories import ConversionScoreFactory, SessionFactory
from notifications.tests.test_campaigns import HOSTILE, anonymous_ids_in, campaign_running

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=10)
ADDRESS = "ada@example.com"
BACKOFF = 30
CONTENT = ContentIn(
    key="nudge",
    title="Hi {first_name}",
    body="{product} is waiting: {cart_value}",
    cta_url="/cart",
    cta_text="Back to cart",
)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _delivery_settings(settings):
    settings.CAMPAIGN_DELIVERY_ATTEMPTS = 3
    settings.CAMPAIGN_DELIVERY_BACKOFF_SECONDS = BACKOFF
    settings.PUBLIC_BASE_URL = "https://analytics.example.com"


def email_campaign(shop, **overrides):
    return campaign_running(shop, channel="email", variants=[CONTENT], **overrides)


def shopper(shop, *, anonymous_id, address=ADDRESS):
    """A person the shop identified, with their address in an identify event when given."""
    person = PersonFactory(shop=shop, traits={"first_name": "Ada"})
    if address:
        EventFactory(
            shop=shop,
            person=person,
            anonymous_id=anonymous_id,
            type="identify",
            properties={"traits": {"email": address, "first_name": "Ada"}},
            occurred_at=T0 - timedelta(days=3),
        )
    return person


def visit(shop, person, *, anonymous_id, now=NOW, score=0.4):
    """A live session of the person with a cart (a hostile product name) and a score."""
    session = SessionFactory(
        shop=shop, person=person, started_at=now - timedelta(minutes=5), ended_at=now
    )
    EventFactory(
        shop=shop,
        session=session,
        person=person,
        anonymous_id=anonymous_id,
        type="add_to_cart",
        product_id="p1",
        product_name=HOSTILE,
        product_price="12.50",
        product_quantity=2,
        occurred_at=now - timedelta(minutes=1),
    )
    ConversionScoreFactory(session=session, score=score, scored_at=now)
    return session


def treated(campaign, count=1):
    return anonymous_ids_in(campaign, "nudge", count)


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=policy.default)


def link_of(message) -> str:
    text = message.get_body(("plain",)).get_content()
    return re.search(r"https://analytics\.example\.com(/notifications/unsubscribe/\S+/)", text)[1]


# --- email ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_email_is_sent_once_per_person_per_cap_window_with_both_parts(shop, smtp_server):
    campaign = email_campaign(shop, max_per_person_day=1, max_per_person_week=3)
    [anonymous_id] = treated(campaign)
    person = shopper(shop, anonymous_id=anonymous_id)
    visit(shop, person, anonymous_id=anonymous_id)

    first = decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    visit(shop, person, anonymous_id=anonymous_id, now=NOW + timedelta(hours=2))
    second = decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW + timedelta(hours=2))
    delivery = CampaignDelivery.objects.get()
    sent = deliveries.campaign_delivery_send(delivery_id=delivery.pk, now=NOW)
    again = deliveries.campaign_delivery_send(delivery_id=delivery.pk, now=NOW)

    assert (first.decisions, second.decisions) == (1, 0)
    assert (sent.status, sent.attempts, sent.sent_at) == (DeliveryStatus.SENT, 1, NOW)
    assert (again.status, again.attempts) == (DeliveryStatus.SENT, 1)
    [(recipients, raw)] = smtp_server.messages
    message = parsed(raw)
    assert recipients == [ADDRESS]
    assert message["Subject"] == "Hi Ada"
    assert (
        message["Message-ID"] == f"<campaign-decision-{delivery.decision_id}@analytics.example.com>"
    )
    assert sent.message_id == message["Message-ID"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    # Shopper text is text: as it is in the plain part, escaped in the HTML part.
    assert f"{HOSTILE} is waiting: 25.00 USD" in text
    assert "&lt;img src=x onerror=alert(1)&gt; is waiting: 25.00 USD" in html
    assert "<img" not in html
    # A same-site CTA path is made absolute with the shop's domain (an email has no site).
    assert f"Back to cart: https://{shop.domain}/cart" in text
    assert f'href="https://{shop.domain}/cart"' in html
    link = link_of(message)
    # Folded onto its own line (a long header): the value is the same after the fold.
    assert message["List-Unsubscribe"].strip() == f"<https://analytics.example.com{link}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert f'href="https://analytics.example.com{link}"' in html


@pytest.mark.django_db
def test_the_next_cap_window_gets_the_next_email(shop, smtp_server):
    campaign = email_campaign(shop, max_per_person_day=1, max_per_person_week=3)
    [anonymous_id] = treated(campaign)
    person = shopper(shop, anonymous_id=anonymous_id)
    visit(shop, person, anonymous_id=anonymous_id)
    later = NOW + timedelta(days=1, minutes=1)

    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    visit(shop, person, anonymous_id=anonymous_id, now=later)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=later)
    for delivery in CampaignDelivery.objects.order_by("pk"):
        deliveries.campaign_delivery_send(delivery_id=delivery.pk, now=later)

    assert CampaignDelivery.objects.filter(status=DeliveryStatus.SENT).count() == 2
    assert len(smtp_server.messages) == 2


@pytest.mark.django_db
def test_a_person_without_a_stored_address_is_not_decided(shop, smtp_server):
    campaign = email_campaign(shop)
    [with_address, without] = treated(campaign, 2)
    visit(shop, shopper(shop, anonymous_id=with_address), anonymous_id=with_address)
    visit(shop, shopper(shop, anonymous_id=without, address=None), anonymous_id=without)
    # An address that is not one (a typo) is no address either.
    [typo] = anonymous_ids_in(campaign, "nudge", 3)[2:]
    visit(shop, shopper(shop, anonymous_id=typo, address="ada(at)example"), anonymous_id=typo)

    result = decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)

    assert result.decisions == 1
    assert CampaignDecision.objects.get().anonymous_id == with_address


@pytest.mark.django_db
def test_the_holdout_gets_a_skipped_delivery_and_no_email(shop, smtp_server):
    campaign = email_campaign(shop)
    [anonymous_id] = anonymous_ids_in(campaign, "holdout", 1)
    visit(shop, shopper(shop, anonymous_id=anonymous_id), anonymous_id=anonymous_id)

    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    delivery = CampaignDelivery.objects.get()
    after = deliveries.campaign_delivery_send(delivery_id=delivery.pk, now=NOW)

    assert delivery.decision.is_holdout
    assert (after.status, after.attempts, after.last_error) == (
        DeliveryStatus.SKIPPED,
        0,
        "holdout: nothing sent",
    )
    assert smtp_server.messages == []


@pytest.mark.django_db
def test_email_decisions_are_not_served_as_toasts(shop):
    campaign = email_campaign(shop)
    [anonymous_id] = treated(campaign)
    visit(shop, shopper(shop, anonymous_id=anonymous_id), anonymous_id=anonymous_id)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)

    answer = APIClient().get(
        "/notifications/pending/",
        {"anonymous_id": anonymous_id},
        headers={"X-Write-Key": shop.write_key},
    )

    assert answer.json() == {"notification": None, "exposure": None}


@pytest.mark.django_db
def test_unsubscribe_link_works_without_login_and_stops_further_email(shop, smtp_server):
    campaign = email_campaign(shop, max_per_person_day=5, max_per_person_week=5)
    [anonymous_id] = treated(campaign)
    person = shopper(shop, anonymous_id=anonymous_id)
    visit(shop, person, anonymous_id=anonymous_id)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    first = CampaignDelivery.objects.get()
    deliveries.campaign_delivery_send(delivery_id=first.pk, now=NOW)
    link = link_of(parsed(smtp_server.messages[0][1]))
    # A second decision made before the click, still pending when it happens.
    visit(shop, person, anonymous_id=anonymous_id, now=NOW + timedelta(hours=1))
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW + timedelta(hours=1))
    pending = CampaignDelivery.objects.exclude(pk=first.pk).get()

    page = APIClient().get(link)
    twice = APIClient().post(link)
    skipped = deliveries.campaign_delivery_send(
        delivery_id=pending.pk, now=NOW + timedelta(hours=1)
    )
    visit(shop, person, anonymous_id=anonymous_id, now=NOW + timedelta(hours=2))
    later = decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW + timedelta(hours=2))

    assert page.status_code == 200
    assert b"You are unsubscribed" in page.content
    assert twice.status_code == 200
    [unsubscribe] = EmailUnsubscribe.objects.all()
    assert (unsubscribe.shop_id, unsubscribe.person_id) == (shop.pk, person.pk)
    assert (skipped.status, skipped.last_error) == (
        DeliveryStatus.SKIPPED,
        "no address to email (not stored, unsubscribed or hard-bounced)",
    )
    assert later.decisions == 0
    assert len(smtp_server.messages) == 1


@pytest.mark.django_db
def test_an_unsubscribe_holds_for_the_address_under_another_person(shop, smtp_server):
    campaign = email_campaign(shop)
    [first, second] = treated(campaign, 2)
    person = shopper(shop, anonymous_id=first)
    token = deliveries.unsubscribe_token(shop_id=shop.pk, person_id=person.pk, address=ADDRESS)
    deliveries.email_unsubscribe(token=token, now=NOW)
    # The same address, upper-cased, on a person the identity graph did not merge.
    visit(shop, shopper(shop, anonymous_id=second, address=" ADA@example.com"), anonymous_id=second)

    result = decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)

    assert result.decisions == 0


@pytest.mark.django_db
@pytest.mark.parametrize("token", ["nonsense", "eyJzIjoxfQ:1tamper:bad"])
def test_a_bad_unsubscribe_token_is_refused_and_saves_nothing(shop, token):
    response = APIClient().get(f"/notifications/unsubscribe/{token}/")

    assert response.status_code == 400
    assert b"This link is not valid" in response.content
    assert EmailUnsubscribe.objects.count() == 0


@pytest.mark.django_db
def test_a_token_for_another_shop_does_not_unsubscribe_here(shop, other_shop):
    person = PersonFactory(shop=shop)
    token = deliveries.unsubscribe_token(
        shop_id=other_shop.pk, person_id=person.pk, address=ADDRESS
    )

    deliveries.email_unsubscribe(token=token, now=NOW)

    assert list(EmailUnsubscribe.objects.values_list("shop_id", "person_id")) == [
        (other_shop.pk, None)
    ]


@pytest.mark.django_db
def test_a_failing_smtp_server_is_retried_with_backoff_then_succeeds(shop, smtp_server):
    campaign = email_campaign(shop)
    [anonymous_id] = treated(campaign)
    visit(shop, shopper(shop, anonymous_id=anonymous_id), anonymous_id=anonymous_id)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    delivery_id = CampaignDelivery.objects.get().pk
    smtp_server.refusals = ["451 4.3.0 try again later", "452 4.3.1 insufficient storage"]

    first = deliveries.campaign_delivery_send(delivery_id=delivery_id, now=NOW)
    too_early = deliveries.campaign_delivery_send(
        delivery_id=delivery_id, now=NOW + timedelta(seconds=BACKOFF - 1)
    )
    second = deliveries.campaign_delivery_send(
        delivery_id=delivery_id, now=NOW + timedelta(seconds=BACKOFF)
    )
    third = deliveries.campaign_delivery_send(
        delivery_id=delivery_id, now=NOW + timedelta(seconds=3 * BACKOFF)
    )

    assert (first.status, first.attempts) == (DeliveryStatus.PENDING, 1)
    assert first.next_attempt_at == NOW + timedelta(seconds=BACKOFF)
    assert first.last_error.startswith("SMTPDataError: (451")
    assert (too_early.status, too_early.attempts) == (DeliveryStatus.PENDING, 1)
    # Exponential: the second wait is twice the first.
    assert (second.status, second.attempts) == (DeliveryStatus.PENDING, 2)
    assert second.next_attempt_at == NOW + timedelta(seconds=3 * BACKOFF)
    assert second.last_error.startswith("SMTPDataError: (452")
    assert (third.status, third.attempts, third.last_error) == (DeliveryStatus.SENT, 3, "")
    assert len(smtp_server.messages) == 1


@pytest.mark.django_db
def test_a_hard_bounce_fails_at_once_and_the_address_is_never_emailed_again(shop, smtp_server):
    campaign = email_campaign(shop, max_per_person_day=5, max_per_person_week=5)
    [first, second, third] = treated(campaign, 3)
    gone = shopper(shop, anonymous_id=first, address="gone@example.com")
    visit(shop, gone, anonymous_id=first)
    visit(shop, shopper(shop, anonymous_id=second), anonymous_id=second)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    smtp_server.unknown["gone@example.com"] = "550 5.1.1 <gone@example.com>: no such user"

    sent = {
        row.decision.anonymous_id: deliveries.campaign_delivery_send(delivery_id=row.pk, now=NOW)
        for row in CampaignDelivery.objects.select_related("decision")
    }
    # The same person's next visit, and another person identified with the same address.
    visit(shop, gone, anonymous_id=first, now=NOW + timedelta(hours=2))
    visit(
        shop,
        shopper(shop, anonymous_id=third, address="GONE@example.com"),
        anonymous_id=third,
        now=NOW + timedelta(hours=2),
    )
    later = decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW + timedelta(hours=2))

    bounced = sent[first]
    assert (bounced.status, bounced.attempts, bounced.next_attempt_at) == (
        DeliveryStatus.FAILED, 1, None,
    )  # fmt: skip
    assert bounced.last_error.startswith(
        "hard bounce, the address is not emailed again: SMTPRecipientsRefused: "
    )
    assert "550" in bounced.last_error
    assert sent[second].status == DeliveryStatus.SENT
    assert [to for to, _ in smtp_server.messages] == [[ADDRESS]]
    [suppressed] = EmailUnsubscribe.objects.all()
    assert (suppressed.person_id, suppressed.reason) == (gone.pk, "bounced")
    assert later.decisions == 0


BOUNCING = "old@example.com"


def bounced_then_readdressed(shop, smtp_server, *, unsubscribed: bool = False):
    """A person emailed at an address that bounces (550 at RCPT), who (after clicking an
    earlier email's unsubscribe link, when `unsubscribed`) gives the shop a working address and
    visits again two hours later. Returns the person."""
    campaign = email_campaign(shop, max_per_person_day=5, max_per_person_week=5)
    [anonymous_id] = treated(campaign)
    person = shopper(shop, anonymous_id=anonymous_id, address=BOUNCING)
    visit(shop, person, anonymous_id=anonymous_id)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    smtp_server.unknown[BOUNCING] = "550 5.1.1 no such user"
    deliveries.campaign_delivery_send(delivery_id=CampaignDelivery.objects.get().pk, now=NOW)
    if unsubscribed:
        token = deliveries.unsubscribe_token(shop_id=shop.pk, person_id=person.pk, address=BOUNCING)
        deliveries.email_unsubscribe(token=token, now=NOW + timedelta(minutes=5))
    EventFactory(
        shop=shop,
        person=person,
        anonymous_id=anonymous_id,
        type="identify",
        properties={"traits": {"email": ADDRESS}},
        occurred_at=NOW,
    )
    visit(shop, person, anonymous_id=anonymous_id, now=NOW + timedelta(hours=2))
    return person


@pytest.mark.django_db
def test_a_bounce_stops_the_address_not_the_person(shop, smtp_server):
    bounced_then_readdressed(shop, smtp_server)

    later = decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW + timedelta(hours=2))
    delivery = CampaignDelivery.objects.order_by("pk").last()
    resent = deliveries.campaign_delivery_send(
        delivery_id=delivery.pk, now=NOW + timedelta(hours=2)
    )

    assert later.decisions == 1
    assert resent.status == DeliveryStatus.SENT
    assert [to for to, _ in smtp_server.messages] == [[ADDRESS]]


@pytest.mark.django_db
def test_an_unsubscribe_after_a_bounce_stops_the_person_too(shop, smtp_server):
    person = bounced_then_readdressed(shop, smtp_server, unsubscribed=True)

    later = decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW + timedelta(hours=2))

    [row] = EmailUnsubscribe.objects.all()
    assert (row.person_id, row.reason) == (person.pk, "unsubscribed")
    assert later.decisions == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("reply", "status", "attempts"),
    [
        ("451 4.2.1 mailbox busy, try later", DeliveryStatus.PENDING, 1),  # at RCPT: transient
        ("554 5.6.0 message refused", DeliveryStatus.FAILED, 1),  # at DATA: permanent
    ],
)
def test_smtp_replies_are_transient_or_permanent_by_their_class(
    shop, smtp_server, reply, status, attempts
):
    campaign = email_campaign(shop)
    [anonymous_id] = treated(campaign)
    visit(shop, shopper(shop, anonymous_id=anonymous_id), anonymous_id=anonymous_id)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    if reply.startswith("451"):
        smtp_server.unknown[ADDRESS] = reply
    else:
        smtp_server.refusals = [reply]

    sent = deliveries.campaign_delivery_send(delivery_id=CampaignDelivery.objects.get().pk, now=NOW)

    assert (sent.status, sent.attempts) == (status, attempts)
    assert reply[:3] in sent.last_error
    assert not sent.last_error.startswith("hard bounce")
    assert not EmailUnsubscribe.objects.exists()
    assert smtp_server.messages == []


@pytest.mark.django_db
def test_a_refusing_smtp_server_is_retried_then_recorded_as_failed(shop, settings, unused_port):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", unused_port  # nobody listens
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    campaign = email_campaign(shop)
    [anonymous_id] = treated(campaign)
    visit(shop, shopper(shop, anonymous_id=anonymous_id), anonymous_id=anonymous_id)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    delivery_id = CampaignDelivery.objects.get().pk

    outcomes = [
        deliveries.campaign_delivery_send(delivery_id=delivery_id, now=NOW + timedelta(hours=n))
        for n in range(4)
    ]

    assert [(d.status, d.attempts) for d in outcomes] == [
        (DeliveryStatus.PENDING, 1),
        (DeliveryStatus.PENDING, 2),
        (DeliveryStatus.FAILED, 3),
        (DeliveryStatus.FAILED, 3),
    ]
    failed = CampaignDelivery.objects.get()
    assert failed.last_error.startswith("ConnectionRefusedError")
    assert (failed.next_attempt_at, failed.sent_at) == (None, None)


@pytest.mark.django_db
def test_the_task_sends_and_the_sweep_picks_up_lost_and_due_retries(
    shop, smtp_server, celery_eager
):
    campaign = email_campaign(shop)
    [anonymous_id] = treated(campaign)
    visit(shop, shopper(shop, anonymous_id=anonymous_id), anonymous_id=anonymous_id)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    delivery = CampaignDelivery.objects.get()
    smtp_server.refusals = ["451 4.3.0 try again later"]

    first = tasks.campaign_delivery_send_task.delay(delivery.pk).get()
    # Due since more than the grace minute: its retry message was lost (a worker restart).
    CampaignDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=2)
    )
    swept = tasks.campaign_deliveries_sweep_task.delay().get()

    assert first == DeliveryStatus.PENDING
    assert swept == 1
    assert CampaignDelivery.objects.get().status == DeliveryStatus.SENT
    assert len(smtp_server.messages) == 1


@pytest.mark.django_db
def test_a_stored_decision_is_emailed_once_committed(
    shop, smtp_server, celery_eager, django_capture_on_commit_callbacks
):
    campaign = email_campaign(shop)
    [treated_id] = treated(campaign)
    [holdout_id] = anonymous_ids_in(campaign, "holdout", 1)
    for anonymous_id in (treated_id, holdout_id):
        visit(shop, shopper(shop, anonymous_id=anonymous_id), anonymous_id=anonymous_id)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)

    # One send for the treated decision; the holdout's row is skipped without a message.
    assert len(callbacks) == 1
    statuses = dict(CampaignDelivery.objects.values_list("decision__arm", "status"))
    assert statuses == {"nudge": DeliveryStatus.SENT, "holdout": DeliveryStatus.SKIPPED}
    assert len(smtp_server.messages) == 1
    # The campaign's results count the log: one email sent, the holdout's row skipped.
    campaign.refresh_from_db()
    assert results.campaign_deliveries(campaign=campaign, shown={})[1:] == [
        {
            "channel": "email",
            "delivered": {"nudge": 1},
            "total": 1,
            "by_status": {"sent": 1, "skipped": 1},
        }
    ]


# --- killed mid-send --------------------------------------------------------------------------


class HoldingInbox:
    """Accepts the message, then holds the 250 answer for a while: the client is killed while
    the server has the message (the worst moment: sent, but not recorded)."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.accepted = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.original_content)
        self.accepted.set()
        await asyncio.sleep(3)
        return "250 Message accepted for delivery"


def _delivery_for_kill(shop) -> CampaignDelivery:
    campaign = email_campaign(shop)
    [anonymous_id] = treated(campaign)
    session = visit(shop, shopper(shop, anonymous_id=anonymous_id), anonymous_id=anonymous_id)
    decision = CampaignDecision.objects.create(
        campaign=campaign,
        shop=shop,
        session=session,
        person=session.person,
        anonymous_id=anonymous_id,
        unit_id=f"anon:{anonymous_id}",
        phase=1,
        arm="nudge",
        reason="test",
        title="Hi Ada",
        body="Your cart",
        cta_url="/cart",
        created_at=NOW,
    )
    # The service's row (no enqueue: the worker below is this test's own process).
    return CampaignDelivery.objects.get(
        pk=deliveries.delivery_create(decision=decision, campaign=campaign, now=NOW)
    )


def _worker(delivery_id: int, smtp_port: int) -> subprocess.Popen:
    """A separate process that sends the delivery as a Celery worker would."""
    name = connection.settings_dict["NAME"]
    env = os.environ | {
        "DATABASE_URL": f"mysql://root@127.0.0.1:3306/{name}",
        "EMAIL_URL": f"smtp://127.0.0.1:{smtp_port}",
        "EMAIL_TIMEOUT": "30",
        "PUBLIC_BASE_URL": "https://analytics.example.com",
    }
    code = (
        "from django.utils import timezone\n"
        "from notifications.campaigns.deliveries import campaign_delivery_send\n"
        f"campaign_delivery_send(delivery_id={delivery_id}, now=timezone.now())\n"
    )
    return subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for(predicate, *, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "the worker did not get there in time"
        time.sleep(0.05)


def _restart_and_sweep(delivery_id: int) -> tuple[deliveries.SweepResult, CampaignDelivery]:
    """What happens after the kill: a new worker gets the message again at once, and beat's
    sweep runs once the claim is older than any send can take."""
    early = deliveries.campaign_delivery_send(delivery_id=delivery_id, now=timezone.now())
    assert early.status == DeliveryStatus.SENDING
    later = timezone.now() + timedelta(seconds=601)
    swept = deliveries.campaign_deliveries_sweep(now=later)
    return swept, deliveries.campaign_delivery_send(delivery_id=delivery_id, now=later)


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_after_smtp_accepted_is_not_sent_again(shop, settings, unused_port):
    inbox = HoldingInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=unused_port)
    controller.start()
    port = unused_port
    # The restarted worker (this process) would send to the same server: a resend would show.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    delivery = _delivery_for_kill(shop)
    try:
        worker = _worker(delivery.pk, port)
        _wait_for(inbox.accepted.is_set)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        claimed = CampaignDelivery.objects.get(pk=delivery.pk)

        swept, after = _restart_and_sweep(delivery.pk)
    finally:
        controller.stop()

    assert (claimed.status, claimed.attempts) == (DeliveryStatus.SENDING, 1)
    assert (swept.uncertain, swept.due) == (1, [])
    assert (after.status, after.attempts, after.sent_at) == (DeliveryStatus.UNCERTAIN, 1, None)
    assert "not sent again" in after.last_error
    assert len(inbox.messages) == 1


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_after_its_claim_before_smtp_is_not_sent_blindly(shop, smtp_server):
    # A server that takes the connection and never greets: the worker hangs after its claim.
    # The restarted worker (this process) would send to `smtp_server`: a resend would show.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)
    delivery = _delivery_for_kill(shop)
    try:
        worker = _worker(delivery.pk, silent.getsockname()[1])
        _wait_for(
            lambda: CampaignDelivery.objects.get(pk=delivery.pk).status == DeliveryStatus.SENDING
        )
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)

        swept, after = _restart_and_sweep(delivery.pk)
    finally:
        silent.close()

    assert swept.uncertain == 1
    assert after.status == DeliveryStatus.UNCERTAIN
    assert smtp_server.messages == []


# --- webhook ----------------------------------------------------------------------------------


def webhook_campaign(shop, receiver, **overrides):
    campaign = campaign_running(
        shop, key="hook", channel="webhook", webhook_url=receiver.url, **overrides
    )
    receiver.secret = campaign.webhook_secret
    return campaign


@pytest.mark.django_db
def test_webhook_is_signed_with_the_campaigns_secret_and_a_500_is_retried(
    shop, receiver, api_client
):
    campaign = webhook_campaign(shop, receiver)
    [anonymous_id] = anonymous_ids_in(campaign, "nudge", 1)
    person = shopper(shop, anonymous_id=anonymous_id, address=None)
    session = visit(shop, person, anonymous_id=anonymous_id)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    delivery_id = CampaignDelivery.objects.get().pk
    receiver.statuses = [500]

    first = deliveries.campaign_delivery_send(delivery_id=delivery_id, now=NOW)
    second = deliveries.campaign_delivery_send(
        delivery_id=delivery_id, now=NOW + timedelta(seconds=BACKOFF)
    )
    log = api_client.get(
        f"/notifications/campaigns/{campaign.pk}/deliveries/?shop={shop.domain}"
    ).json()

    assert (first.status, first.attempts, first.response_status, first.response_body) == (
        DeliveryStatus.PENDING,
        1,
        500,
        "status 500",
    )
    assert first.last_error == "the receiver answered 500"
    assert (second.status, second.attempts, second.response_status) == (
        DeliveryStatus.SENT,
        2,
        200,
    )
    assert len(campaign.webhook_secret) == 64
    assert [request["verified"] for request in receiver.requests] == [True, True]
    headers = [request["headers"] for request in receiver.requests]
    decision = CampaignDecision.objects.get()
    assert {h["Idempotency-Key"] for h in headers} == {f"campaign-decision-{decision.pk}"}
    body = json.loads(receiver.requests[-1]["body"])
    assert body == {
        "type": "campaign.decision",
        "delivery": delivery_id,
        "decision": decision.pk,
        "shop": shop.domain,
        "campaign": {"id": campaign.pk, "key": "hook", "name": "Nudge"},
        "experiment": {"key": "campaign-hook", "phase": 1},
        "arm": "nudge",
        "person": {
            "id": person.pk,
            "user_id": "",
            "anonymous_id": anonymous_id,
            "unit_id": f"anon:{anonymous_id}",
        },
        "session": session.pk,
        "content": {
            "title": "Hi Ada",
            "body": f"{HOSTILE} is waiting: 25.00 USD",
            "cta_url": "https://shop.example/cart",
            "cta_text": "Back to cart",
            "discount_code": "",
        },
        "reason": "score 0.400 in [0.200, 0.600]",
        "score": 0.4,
        "decided_at": NOW.isoformat(),
    }
    [row] = log["results"]
    assert (row["status"], row["attempts"], row["response_status"], row["response_body"]) == (
        "sent",
        2,
        200,
        "status 200",
    )
    assert (row["person"], row["arm"], row["is_holdout"]) == (person.pk, "nudge", False)


@pytest.mark.django_db
def test_a_webhook_4xx_fails_at_once_and_the_holdout_is_skipped(shop, receiver):
    campaign = webhook_campaign(shop, receiver)
    [treated_id] = anonymous_ids_in(campaign, "nudge", 1)
    [holdout_id] = anonymous_ids_in(campaign, "holdout", 1)
    for anonymous_id in (treated_id, holdout_id):
        person = shopper(shop, anonymous_id=anonymous_id, address=None)
        visit(shop, person, anonymous_id=anonymous_id)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    receiver.statuses = [410]

    outcomes = {
        d.decision.arm: deliveries.campaign_delivery_send(delivery_id=d.pk, now=NOW)
        for d in CampaignDelivery.objects.select_related("decision")
    }

    assert (outcomes["nudge"].status, outcomes["nudge"].response_status) == (
        DeliveryStatus.FAILED,
        410,
    )
    assert outcomes["holdout"].status == DeliveryStatus.SKIPPED
    assert len(receiver.requests) == 1


@pytest.mark.django_db
def test_a_paused_campaigns_pending_delivery_is_skipped(shop, receiver):
    campaign = webhook_campaign(shop, receiver)
    [anonymous_id] = anonymous_ids_in(campaign, "nudge", 1)
    visit(shop, shopper(shop, anonymous_id=anonymous_id, address=None), anonymous_id=anonymous_id)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    services.campaign_pause(campaign=campaign, now=NOW)

    after = deliveries.campaign_delivery_send(
        delivery_id=CampaignDelivery.objects.get().pk, now=NOW
    )

    assert (after.status, after.last_error) == (
        DeliveryStatus.SKIPPED,
        "campaign paused before sending",
    )
    assert receiver.requests == []


# --- API --------------------------------------------------------------------------------------


def campaign_body(**overrides):
    return {
        "key": "hook",
        "name": "Hook",
        "trigger": {"kind": "score_band", "low": 0.2, "high": 0.6},
        "variants": [{"key": "nudge", "title": "Hi {first_name}", "body": "b", "cta_url": "/cart"}],
    } | overrides


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"channel": "webhook"}, "required for channel webhook: an http(s) URL"),
        ({"channel": "webhook", "webhook_url": ""}, "required for channel webhook: an http(s) URL"),
        ({"channel": "webhook", "webhook_url": "ftp://hooks.example/x"}, "an http(s) URL"),
        ({"channel": "webhook", "webhook_url": "javascript:alert(1)"}, "an http(s) URL"),
        ({"channel": "webhook", "webhook_url": "https://"}, "an http(s) URL"),
        ({"channel": "webhook", "webhook_url": "https://a b.example/"}, "an http(s) URL"),
        (
            {"channel": "webhook", "webhook_url": "https://h.example/" + "x" * 1010},
            "at most 1024 characters",
        ),
        ({"channel": "email", "webhook_url": "https://h.example/"}, "only with channel webhook"),
        ({"webhook_url": "https://h.example/"}, "only with channel webhook"),
    ],
)
def test_bad_channel_input_answers_400_and_saves_nothing(api_client, shop, overrides, message):
    response = api_client.post(
        f"/notifications/campaigns/?shop={shop.domain}", campaign_body(**overrides), format="json"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert response.json()["fields"]["webhook_url"] == [message]
    assert (Campaign.objects.count(), Experiment.objects.count()) == (0, 0)


PRIVATE_URLS = [
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
]


@pytest.mark.django_db
@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_a_webhook_url_to_a_private_address_answers_400_and_saves_nothing(
    api_client, shop, dns, url
):
    dns.answers["internal.example.com"] = ["127.0.0.1"]

    response = api_client.post(
        f"/notifications/campaigns/?shop={shop.domain}",
        campaign_body(channel="webhook", webhook_url=url),
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    [message] = response.json()["fields"]["webhook_url"]
    assert "webhooks are sent to public addresses only (WEBHOOK_ALLOW_PRIVATE_NETWORKS)" in message
    assert (Campaign.objects.count(), Experiment.objects.count()) == (0, 0)


@pytest.mark.django_db
def test_a_patch_to_a_private_address_changes_nothing_unless_the_setting_allows_it(
    api_client, shop, dns, settings
):
    created = api_client.post(
        f"/notifications/campaigns/?shop={shop.domain}",
        campaign_body(channel="webhook", webhook_url="https://93.184.216.34/in"),
        format="json",
    )
    url = f"/notifications/campaigns/{created.json()['id']}/?shop={shop.domain}"

    refused = api_client.patch(url, {"webhook_url": "http://169.254.169.254/"}, format="json")
    unchanged = Campaign.objects.get().webhook_url
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    allowed = api_client.patch(url, {"webhook_url": "http://10.0.0.1/relay"}, format="json")

    assert created.status_code == 201
    assert (refused.status_code, refused.json()["fields"]) == (
        400,
        {
            "webhook_url": [
                "169.254.169.254, a private, loopback, link-local or otherwise non-public "
                "address: webhooks are sent to public addresses only "
                "(WEBHOOK_ALLOW_PRIVATE_NETWORKS)"
            ]
        },
    )
    assert unchanged == "https://93.184.216.34/in"
    assert (allowed.status_code, allowed.json()["webhook_url"]) == (200, "http://10.0.0.1/relay")


@pytest.mark.django_db
def test_a_webhook_to_a_private_address_fails_at_once_and_sends_nothing(shop, receiver, settings):
    """Stored while the setting allowed it (or a name that resolved elsewhere then): the send
    checks again, and a refusal is a permanent failure, not retried."""
    webhook_campaign(shop, receiver)
    [anonymous_id] = anonymous_ids_in(Campaign.objects.get(), "nudge", 1)
    visit(shop, shopper(shop, anonymous_id=anonymous_id, address=None), anonymous_id=anonymous_id)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False

    after = deliveries.campaign_delivery_send(
        delivery_id=CampaignDelivery.objects.get().pk, now=NOW
    )

    assert (after.status, after.attempts, after.next_attempt_at, after.response_status) == (
        DeliveryStatus.FAILED,
        1,
        None,
        None,
    )
    assert after.last_error == (
        "refused: 127.0.0.1, a private, loopback, link-local or otherwise non-public address: "
        "webhooks are sent to public addresses only (WEBHOOK_ALLOW_PRIVATE_NETWORKS)"
    )
    assert CampaignDelivery.objects.get().status == DeliveryStatus.FAILED
    assert receiver.requests == []


@pytest.mark.django_db
def test_patch_to_webhook_needs_a_url_and_changes_nothing_without_one(api_client, shop):
    campaign = email_campaign(shop)
    url = f"/notifications/campaigns/{campaign.pk}/?shop={shop.domain}"

    refused = api_client.patch(url, {"channel": "webhook"}, format="json")
    unchanged = Campaign.objects.get()
    accepted = api_client.patch(
        url, {"channel": "webhook", "webhook_url": "https://hooks.example/in"}, format="json"
    )
    back = api_client.patch(url, {"channel": "on_site"}, format="json")

    assert (refused.status_code, refused.json()["fields"]) == (
        400,
        {"webhook_url": ["required for channel webhook: an http(s) URL"]},
    )
    assert (unchanged.channel, unchanged.webhook_url, unchanged.webhook_secret) == ("email", "", "")
    assert accepted.status_code == 200
    assert accepted.json()["webhook_url"] == "https://hooks.example/in"
    assert len(accepted.json()["webhook_secret"]) == 64
    assert (back.json()["channel"], back.json()["webhook_url"]) == ("on_site", "")


@pytest.mark.django_db
def test_the_webhook_secret_is_shown_to_owners_only(api_client, shop):
    created = api_client.post(
        f"/notifications/campaigns/?shop={shop.domain}",
        campaign_body(channel="webhook", webhook_url="https://hooks.example/in"),
        format="json",
    )
    analyst = UserFactory()
    ShopMembership.objects.create(shop=shop, user=analyst, role=ShopMembership.Role.ANALYST)
    client = APIClient()
    client.force_authenticate(user=analyst)
    path = f"/notifications/campaigns/{created.json()['id']}/?shop={shop.domain}"

    as_owner = api_client.get(path).json()
    as_analyst = client.get(path).json()

    assert created.status_code == 201
    assert created.json()["webhook_secret"] == Campaign.objects.get().webhook_secret
    assert as_owner["webhook_secret"] == created.json()["webhook_secret"]
    assert as_analyst["webhook_secret"] is None
    assert as_analyst["webhook_url"] == "https://hooks.example/in"


@pytest.mark.django_db
def test_deliveries_api_filters_pages_and_is_shop_scoped(
    api_client, shop, other_shop, receiver, django_assert_num_queries
):
    campaign = webhook_campaign(shop, receiver)
    arms = anonymous_ids_in(campaign, "nudge", 2) + anonymous_ids_in(campaign, "holdout", 1)
    for anonymous_id in arms:
        visit(
            shop, shopper(shop, anonymous_id=anonymous_id, address=None), anonymous_id=anonymous_id
        )
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    base = f"/notifications/campaigns/{campaign.pk}/deliveries/"
    theirs = campaign_running(other_shop)

    with django_assert_num_queries(4):
        everything = api_client.get(f"{base}?shop={shop.domain}&page_size=2")
    skipped = api_client.get(f"{base}?shop={shop.domain}&status=skipped&channel=webhook")
    emails = api_client.get(f"{base}?shop={shop.domain}&channel=email")
    bad_status = api_client.get(f"{base}?shop={shop.domain}&status=lost")
    bad_channel = api_client.get(f"{base}?shop={shop.domain}&channel=on_site")
    other = api_client.get(f"/notifications/campaigns/{theirs.pk}/deliveries/?shop={shop.domain}")
    anonymous = APIClient().get(f"{base}?shop={shop.domain}")

    assert everything.status_code == 200
    assert (everything.json()["count"], len(everything.json()["results"])) == (3, 2)
    assert [r["is_holdout"] for r in skipped.json()["results"]] == [True]
    assert emails.json()["count"] == 0
    assert (bad_status.status_code, list(bad_status.json()["fields"])) == (400, ["status"])
    assert (bad_channel.status_code, list(bad_channel.json()["fields"])) == (400, ["channel"])
    assert other.status_code == 404
    assert anonymous.status_code in (401, 403)


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["campaign", "shop"])
def test_email_and_webhook_campaigns_that_need_consent_decide_nothing(shop, receiver, where):
    required = {"is_consent_required": where == "campaign"}
    if where == "shop":
        shop.consent_mode = ConsentMode.REQUIRED
        shop.save()
    mailing = email_campaign(shop, **required)
    webhook_campaign(shop, receiver, **required)
    for anonymous_id in treated(mailing, 2):
        visit(shop, shopper(shop, anonymous_id=anonymous_id), anonymous_id=anonymous_id)

    result = decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)

    assert (result.campaigns, result.sessions, result.decisions) == (2, 2, 0)


# --- admin ------------------------------------------------------------------------------------

DELIVERIES_ADMIN = "/admin/notifications/campaigndelivery/"


@pytest.mark.django_db
def test_the_admin_lists_deliveries_read_only(admin_client, shop, receiver):
    campaign = webhook_campaign(shop, receiver)
    [anonymous_id] = anonymous_ids_in(campaign, "nudge", 1)
    visit(shop, shopper(shop, anonymous_id=anonymous_id, address=None), anonymous_id=anonymous_id)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    receiver.statuses = [500]
    delivery = deliveries.campaign_delivery_send(
        delivery_id=CampaignDelivery.objects.get().pk, now=NOW
    )

    listed = admin_client.get(f"{DELIVERIES_ADMIN}?status=pending")
    add = admin_client.get(f"{DELIVERIES_ADMIN}add/")
    delete = admin_client.post(f"{DELIVERIES_ADMIN}{delivery.pk}/delete/", {"post": "yes"})
    campaign_page = admin_client.get(f"/admin/notifications/campaign/{campaign.pk}/change/")

    assert listed.status_code == 200
    assert b"the receiver answered 500" in listed.content
    assert (add.status_code, delete.status_code) == (403, 403)
    assert CampaignDelivery.objects.filter(pk=delivery.pk).exists()
    assert campaign.webhook_secret.encode() not in campaign_page.content


@pytest.mark.django_db
def test_a_link_of_a_deleted_shop_is_refused(shop):
    token = deliveries.unsubscribe_token(shop_id=shop.pk + 1000, person_id=1, address=ADDRESS)

    response = APIClient().get(f"/notifications/unsubscribe/{token}/")

    assert response.status_code == 400
    assert EmailUnsubscribe.objects.count() == 0
