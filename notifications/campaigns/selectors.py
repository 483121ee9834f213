"""Reads of campaigns: the shop's list, one campaign, the default score band, and what the
storefront should show a browser now (`notification_pending`, cached per anonymous id).

The pending answer is cached per browser with the shop's campaign generation it was read under: a
stored decision drops its browser's key, and every campaign state change (start, pause, stop)
bumps the generation, so a global stop voids every browser's answer at once without listing them.
"""

import contextlib
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db.models import Count, Min, Q, QuerySet
from redis.exceptions import RedisError

from clickserver.errors import ApplicationError
from events.identity import email_hash
from events.models import ConsentMode, Event, Person, Session, Shop
from notifications.campaigns.rules import SessionFacts
from notifications.experiments.rules import UnitTraits
from notifications.models import (
    Campaign,
    CampaignChannel,
    CampaignDecision,
    CampaignDelivery,
    CampaignStatus,
    ConversionScore,
    DiscountCode,
    EmailUnsubscribe,
    ExperimentStatus,
    SuppressionReason,
)
from segments.models import SegmentMembership

# A decision older than this is not served: the session it was made for is over (the live window).
PENDING_WINDOW = timedelta(minutes=30)
PENDING_CACHE_SECONDS = 30
# The score band a new score-band campaign gets when it names none: the shop's 50th to 90th
# percentile of the live scores of the last DEFAULT_BAND_DAYS, the sessions that "could go either
# way" without the ones already likely to buy; DEFAULT_BAND below DEFAULT_BAND_MIN_SCORES scores.
DEFAULT_BAND_PERCENTILES = (50.0, 90.0)
DEFAULT_BAND_DAYS = 7
DEFAULT_BAND_MIN_SCORES = 50
DEFAULT_BAND = (0.15, 0.6)

PRODUCT_VIEW_TYPE = "product_view"
ADD_TO_CART_TYPE = "add_to_cart"
CHECKOUT_TYPE = "checkout_started"
PURCHASE_TYPE = "purchase"


@dataclass(frozen=True, slots=True)
class SessionIds:
    """Who a session's browser is, and the values its text placeholders take."""

    anonymous_id: str
    user_id: str
    first_name: str
    product: str


@dataclass(frozen=True, slots=True)
class ScoreBand:
    low: float
    high: float
    # How many scores the band came from (0: the fixed default).
    sample_size: int


def generation_key(shop_id: int) -> str:
    return f"campaigns:generation:{shop_id}"


def pending_cache_key(*, shop_id: int, anonymous_id: str) -> str:
    # Hashed: an anonymous id is client text of any length and character set.
    digest = hashlib.sha256(anonymous_id.encode("utf-8")).hexdigest()[:32]
    return f"campaigns:pending:{shop_id}:{digest}"


def campaigns_list(*, shop: Shop) -> QuerySet[Campaign]:
    """The shop's campaigns with their experiment and the size of their code pools."""
    return (
        Campaign.objects.filter(shop=shop)
        .select_related("experiment")
        .annotate(
            codes_total=Count("codes"),
            codes_free=Count("codes", filter=Q(codes__claimed_unit_id__isnull=True)),
        )
    )


def campaign_get(*, shop: Shop, campaign_id: int) -> Campaign:
    campaign = campaigns_list(shop=shop).filter(pk=campaign_id).first()
    if campaign is None:
        raise ApplicationError("No such campaign.", code="not_found", status=404)
    return campaign


def score_band_default(*, shop: Shop, now: datetime) -> ScoreBand:
    scores = np.fromiter(
        ConversionScore.objects.filter(
            shop=shop, scored_at__gte=now - timedelta(days=DEFAULT_BAND_DAYS), scored_at__lte=now
        ).values_list("score", flat=True),
        dtype=float,
    )
    if len(scores) < DEFAULT_BAND_MIN_SCORES:
        return ScoreBand(low=DEFAULT_BAND[0], high=DEFAULT_BAND[1], sample_size=0)
    low, high = (round(float(v), 4) for v in np.percentile(scores, DEFAULT_BAND_PERCENTILES))
    if low >= high:
        # A degenerate distribution (every score alike): the fixed band rather than an empty one.
        return ScoreBand(low=DEFAULT_BAND[0], high=DEFAULT_BAND[1], sample_size=len(scores))
    return ScoreBand(low=low, high=high, sample_size=len(scores))


def _pending_read(*, shop: Shop, anonymous_id: str, now: datetime) -> dict[str, Any] | None:
    decision = (
        CampaignDecision.objects.filter(
            shop=shop,
            anonymous_id=anonymous_id,
            created_at__gte=now - PENDING_WINDOW,
            campaign__status=CampaignStatus.RUNNING,
            # Email and webhook decisions are delivered by their own channel, never as a toast.
            campaign__channel=CampaignChannel.ON_SITE,
        )
        # A visit that bought after its decision is shown nothing (nor exposed, in both arms).
        .exclude(session__is_converted=True)
        .select_related("campaign__experiment")
        .order_by("-created_at", "-id")
        .first()
    )
    if decision is None:
        return None
    experiment = decision.campaign.experiment
    exposure = {"experiment": experiment.key, "variant": decision.arm, "phase": decision.phase}
    answer: dict[str, Any] = {
        "decision": decision.pk,
        "campaign": decision.campaign.key,
        "exposure": exposure,
        "consent_required": decision.campaign.is_consent_required
        or shop.consent_mode == ConsentMode.REQUIRED,
        "notification": None,
    }
    if not decision.is_holdout:
        answer["notification"] = {
            "title": decision.title,
            "body": decision.body,
            "cta_url": decision.cta_url,
            "cta_text": decision.cta_text,
        }
    return answer


def notification_pending(
    *, shop: Shop, anonymous_id: str, has_consent: bool, now: datetime
) -> dict[str, Any]:
    """What the browser should do now: `notification` to show (null for none or holdout) and
    the `exposure` to record (the holdout's too: it was targeted, so it is in the experiment).

    One cache round trip: the browser's cached answer and the shop's generation are read
    together, and an answer cached under an older generation is a miss. A campaign that requires
    consent answers nothing to a browser without it. With Redis down the answer is read from the
    database: the storefront must not fail with the cache.
    """
    key = pending_cache_key(shop_id=shop.pk, anonymous_id=anonymous_id)
    generation_name = generation_key(shop.pk)
    try:
        found = cache.get_many([key, generation_name])
    except RedisError:
        found = None
    generation = (found or {}).get(generation_name) or 0
    cached = (found or {}).get(key)
    answer: dict[str, Any] | None
    if cached is not None and cached[0] == generation:
        answer = cached[1] or None
    else:
        answer = _pending_read(shop=shop, anonymous_id=anonymous_id, now=now)
        if found is not None:
            with contextlib.suppress(RedisError):
                # {} marks "nothing pending", which is most answers and must be cached too.
                cache.set(key, (generation, answer or {}), PENDING_CACHE_SECONDS)
    if answer is None or (answer["consent_required"] and not has_consent):
        return {"notification": None, "exposure": None}
    return {
        "decision": answer["decision"],
        "campaign": answer["campaign"],
        "notification": answer["notification"],
        "exposure": answer["exposure"],
    }


def shops_with_running_campaigns() -> list[int]:
    return list(
        Campaign.objects.filter(status=CampaignStatus.RUNNING)
        .values_list("shop_id", flat=True)
        .distinct()
        .order_by("shop_id")
    )


def campaigns_deciding(*, shop_id: int) -> list[Campaign]:
    """The running campaigns whose experiment runs too (a stopped experiment measures nothing)."""
    return list(
        Campaign.objects.filter(
            shop_id=shop_id,
            status=CampaignStatus.RUNNING,
            experiment__status=ExperimentStatus.RUNNING,
        )
        .select_related("experiment", "shop")
        .prefetch_related("experiment__variants")
        .order_by("pk")
    )


def sessions_facts(
    *, shop: Shop, sessions: list[Session], segment_ids: set[int], now: datetime
) -> dict[int, tuple[SessionFacts, SessionIds]]:
    """Everything the decision rule needs of these sessions, in a fixed number of queries."""
    session_ids = [s.pk for s in sessions]
    person_ids = {s.person_id for s in sessions}
    scores = dict(
        ConversionScore.objects.filter(session_id__in=session_ids).values_list(
            "session_id", "score"
        )
    )
    members: dict[int, set[int]] = {}
    if segment_ids:
        for person_id, segment_id in SegmentMembership.objects.filter(
            person_id__in=person_ids, segment_id__in=segment_ids
        ).values_list("person_id", "segment_id"):
            members.setdefault(person_id, set()).add(segment_id)
    first_sessions = {
        row["person_id"]: row["first"]
        for row in Session.objects.filter(person_id__in=person_ids)
        .values("person_id")
        .annotate(first=Min("started_at"))
    }
    first_names = {
        pk: str((traits or {}).get("first_name") or "")
        for pk, traits in Person.objects.filter(pk__in=person_ids).values_list("pk", "traits")
    }
    events: dict[int, list[tuple]] = {}
    for row in (
        Event.objects.filter(shop=shop, session_id__in=session_ids, occurred_at__lte=now)
        .order_by("occurred_at", "id")
        .values_list(
            "session_id",
            "type",
            "occurred_at",
            "url",
            "product_id",
            "product_name",
            "product_price",
            "product_quantity",
            "anonymous_id",
            "user_id",
        )
    ):
        events.setdefault(row[0], []).append(row)
    facts = {}
    for session in sessions:
        rows = events.get(session.pk, [])
        cart_value = Decimal(0)
        last_cart_at = last_checkout_at = None
        views: dict[str, int] = {}
        product = anonymous_id = user_id = ""
        for _, kind, at, _url, pid, pname, price, quantity, aid, uid in rows:
            anonymous_id, user_id = aid or anonymous_id, uid or user_id
            if kind == PRODUCT_VIEW_TYPE and pid:
                views[pid] = views.get(pid, 0) + 1
                product = pname or product
            elif kind == ADD_TO_CART_TYPE:
                cart_value += (price or Decimal(0)) * (quantity or 1)
                last_cart_at = at
                product = pname or product
            elif kind == CHECKOUT_TYPE:
                last_checkout_at = at
        is_first = first_sessions.get(session.person_id) == session.started_at
        traits = UnitTraits(
            device=session.device or None,
            source=session.utm_source or None,
            visitor="new" if is_first else "returning",
            segment_ids=frozenset(members.get(session.person_id, ())),
            score=scores.get(session.pk),
        )
        facts[session.pk] = (
            SessionFacts(
                traits=traits,
                country=session.country,
                is_converted=session.is_converted or any(row[1] == PURCHASE_TYPE for row in rows),
                cart_value=cart_value,
                last_cart_at=last_cart_at,
                last_checkout_at=last_checkout_at,
                max_product_views=max(views.values(), default=0),
                urls=tuple({row[3] for row in rows if row[3]}),
                is_first_visit=is_first,
            ),
            SessionIds(
                anonymous_id=anonymous_id,
                user_id=user_id,
                first_name=first_names.get(session.person_id, ""),
                product=product,
            ),
        )
    return facts


def decisions_counts(
    *, campaign: Campaign, person_ids: set[int], now: datetime
) -> dict[int, tuple[int, int]]:
    """Per person: this campaign's decisions in the last day and the last week (rolling)."""
    day_ago, week_ago = now - timedelta(days=1), now - timedelta(days=7)
    counts: dict[int, tuple[int, int]] = {}
    for person_id, created_at in CampaignDecision.objects.filter(
        campaign=campaign, person_id__in=person_ids, created_at__gte=week_ago
    ).values_list("person_id", "created_at"):
        day, week = counts.get(person_id, (0, 0))
        counts[person_id] = (day + (created_at >= day_ago), week + 1)
    return counts


def codes_free_exist(*, campaign: Campaign) -> bool:
    return DiscountCode.objects.filter(campaign=campaign, claimed_unit_id__isnull=True).exists()


def sessions_decided(*, shop: Shop, session_ids: list[int]) -> set[int]:
    """Sessions with a decision of any campaign: one notification per session, all campaigns."""
    return set(
        CampaignDecision.objects.filter(shop=shop, session_id__in=session_ids).values_list(
            "session_id", flat=True
        )
    )


# Where the toast must never sit: the checkout button and its kin, unless the page names its own
# (window.clickserverToastAvoid, docs/campaigns.md).
TOAST_AVOID = (
    '[name="checkout"],[href*="/checkout"],form[action*="/checkout"] [type="submit"],'
    ".checkout-button"
)
POLL_MILLISECONDS = 5000
SNIPPET_CACHE_SECONDS = 60


def campaigns_snippet_config(*, shop: Shop) -> dict[str, Any]:
    """The snippet's `notifications` (SNIPPET_CONFIG_HOOKS) when the shop runs an on-site
    campaign; nothing otherwise, so other storefronts do not carry the toast code."""
    key = f"campaigns:snippet:{shop.pk}"
    try:
        has_campaigns = cache.get(key)
    except RedisError:
        has_campaigns = None
    if has_campaigns is None:
        has_campaigns = Campaign.objects.filter(
            shop=shop, status=CampaignStatus.RUNNING, channel=CampaignChannel.ON_SITE
        ).exists()
        with contextlib.suppress(RedisError):
            cache.set(key, has_campaigns, SNIPPET_CACHE_SECONDS)
    if not has_campaigns:
        return {}
    return {"notifications": {"poll": POLL_MILLISECONDS, "avoid": TOAST_AVOID}}


IDENTIFY_TYPE = "identify"


def _address_clean(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 254:
        return ""
    try:
        validate_email(value.strip())
    except ValidationError:
        return ""
    return value.strip()


def persons_emailable(*, shop: Shop, person_ids: set[int]) -> dict[int, str]:
    """The address the shop can email each person at, for those it can (docs/campaigns.md).

    The pipeline keeps only the SHA-256 of an email in the identity graph and leaves it out of
    `Person.traits`; the address itself is stored only where the shop sent it: the `traits.email`
    of its own `identify` events in the raw log (Shopify webhooks carry only the hash). A person
    without one, or whose address (by its hash) unsubscribed, is not here.
    """
    if not person_ids:
        return {}
    found: dict[int, str] = {}
    # Newest first: the latest address a person was identified with is the one to use.
    rows = (
        Event.objects.filter(shop=shop, person_id__in=person_ids, type=IDENTIFY_TYPE)
        .order_by("person_id", "-id")
        .values_list("person_id", "properties")
    )
    for person_id, properties in rows:
        if person_id in found or not isinstance(properties, dict):
            continue
        traits = properties.get("traits")
        address = _address_clean(traits.get("email") if isinstance(traits, dict) else None)
        if address:
            found[person_id] = address
    if not found:
        return {}
    stopped = email_unsubscribed(shop=shop, person_ids=set(found), addresses=set(found.values()))
    return {
        person_id: address
        for person_id, address in found.items()
        if person_id not in stopped.person_ids and email_hash(address) not in stopped.email_hashes
    }


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    person_ids: frozenset[int]
    email_hashes: frozenset[str]


def email_unsubscribed(*, shop: Shop, person_ids: set[int], addresses: set[str]) -> Unsubscribed:
    """Which of these persons asked for no more campaign email, and which of these addresses
    campaign email no longer goes to (unsubscribed or hard-bounced)."""
    hashes = {email_hash(address) for address in addresses} - {""}
    rows = EmailUnsubscribe.objects.filter(shop=shop).filter(
        Q(person_id__in=person_ids) | Q(email_hash__in=hashes)
    )
    people, found = set(), set()
    for person_id, hashed, reason in rows.values_list("person_id", "email_hash", "reason"):
        # A bounce is the address's, not the person's: a new address of theirs is emailed.
        if person_id is not None and reason == SuppressionReason.UNSUBSCRIBED:
            people.add(person_id)
        found.add(hashed)
    return Unsubscribed(person_ids=frozenset(people), email_hashes=frozenset(found))


def deliveries_list(
    *, campaign: Campaign, status: str | None = None, channel: str | None = None
) -> QuerySet[CampaignDelivery]:
    """A campaign's delivery log, newest first; `status` and `channel` are allow-listed by
    the caller (the model's choices)."""
    rows = CampaignDelivery.objects.filter(campaign=campaign).select_related("decision")
    if status:
        rows = rows.filter(status=status)
    if channel:
        rows = rows.filter(channel=channel)
    return rows.order_by("-created_at", "-id")


def person_exists(*, shop_id: int, person_id: int) -> bool:
    return Person.objects.filter(shop_id=shop_id, pk=person_id).exists()


def shop_exists(*, shop_id: int) -> bool:
    return Shop.objects.filter(pk=shop_id).exists()
