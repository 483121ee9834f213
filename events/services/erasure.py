"""Erasure: the one write path that removes a person (or a whole shop) and everything derived.

Every way in goes through here: `POST /events/erasures/`, `manage.py erase_person`, the admin's
person delete and Shopify's `customers/redact` and `shop/redact`. Erasing happens in two steps:

1. `persons_erase` / `shop_erase` delete, in one transaction, the raw rows (events, rejected
   payloads that name the person, sessions, identifiers, persons, orders with their lines and
   refunds, checkouts, Shopify payloads) and, through the person's cascades, their segment
   memberships and conversion scores. They record an `ErasureRequest` with the identifier's kind
   and the counts, never the identifier itself, and the shop-local days the person touched.
2. `erasures_complete` recomputes what aggregates the person: the rollups, visitor bitmaps and
   session paths of those days, the segments (value percentiles move) and the product affinity.
   Those live in apps that depend on events, so the tasks are named in
   `settings.ERASURE_FOLLOW_UPS` and resolved from their dotted paths, as the pipeline's
   follow-ups are. A pending request is the durable to-do: a lost task message is picked up by
   the beat sweep, and a rerun only recomputes again.

A person's orders are deleted, not anonymised: an anonymised order would still count in revenue,
orders and AOV, and the promise is that every answer equals the answer on the same data without
that person.
"""

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db import models, transaction
from django.db.models import Q, QuerySet
from django.db.models.functions import TruncHour
from kombu.exceptions import OperationalError as BrokerError

from clickserver.chunking import chunks
from clickserver.errors import ApplicationError
from events import follow_ups, identity
from events.models import (
    Checkout,
    ErasureRequest,
    Event,
    IdentifierKind,
    Order,
    Person,
    PersonIdentifier,
    PipelineJob,
    PipelineWatermark,
    PrivacyRequest,
    Product,
    Refund,
    RejectedEvent,
    Session,
    Shop,
    WebhookDelivery,
)
from events.validation import clean_id

logger = logging.getLogger(__name__)

Key = tuple[str, str]
HOUR = timedelta(hours=1)
MICROSECOND = timedelta(microseconds=1)
# Rejected payloads are read this many at a time when looking for the person's identifiers.
REJECTED_SCAN_BATCH = 2000
# Where our format, Segment/RudderStack and Shopify-derived events put an identifier.
PAYLOAD_ID_KEYS = frozenset(
    {
        "anonymous_id",
        "anonymousId",
        "user_id",
        "userId",
        "previous_id",
        "previousId",
        "shopify_customer_id",
        "customer_id",
        "email_hash",
        "email",
    }
)
# Rows removed through the person's cascades, reported under these names.
CASCADED = {
    "segments.SegmentMembership": "segment_memberships",
    "notifications.ConversionScore": "conversion_scores",
}


def _subject_key(*, user_id: str | None, anonymous_id: str | None, email: str | None) -> Key:
    """The one identifier an erasure names, as the identity graph stores it."""
    given = {
        name: value
        for name, value in (("user_id", user_id), ("anonymous_id", anonymous_id), ("email", email))
        if value is not None and value != ""
    }
    if len(given) != 1:
        raise ApplicationError(
            "Give exactly one of user_id, anonymous_id or email.",
            fields={name: ["Give exactly one."] for name in given or ("user_id",)},
        )
    name, value = next(iter(given.items()))
    if name == "email":
        hashed = identity.email_hash(value)
        if not hashed:
            raise ApplicationError("Not an email address.", fields={"email": ["Invalid."]})
        return (IdentifierKind.EMAIL_HASH, hashed)
    cleaned = clean_id(value)
    if not cleaned:
        # "null", "guest" and the like are never stored as identifiers: they name nobody.
        raise ApplicationError("Not a usable identifier.", fields={name: ["Invalid."]})
    return (IdentifierKind.USER_ID if name == "user_id" else IdentifierKind.ANONYMOUS_ID, cleaned)


def persons_erase(
    *,
    shop: Shop,
    user_id: str | None = None,
    anonymous_id: str | None = None,
    email: str | None = None,
    now: datetime,
) -> ErasureRequest:
    """Erase the person named by one identifier (email matched by its SHA-256, as stored)."""
    key = _subject_key(user_id=user_id, anonymous_id=anonymous_id, email=email)
    kinds: dict[str, str] = {
        IdentifierKind.USER_ID: ErasureRequest.Kind.USER_ID,
        IdentifierKind.ANONYMOUS_ID: ErasureRequest.Kind.ANONYMOUS_ID,
        IdentifierKind.EMAIL_HASH: ErasureRequest.Kind.EMAIL,
    }
    return _erase(shop=shop, kind=kinds[key[0]], keys=[key], now=now)


def person_erase(*, person: Person, now: datetime) -> ErasureRequest:
    """Erase one stitched person (the admin's delete)."""
    return _erase(
        shop=person.shop, kind=ErasureRequest.Kind.PERSON, keys=[], person_ids=[person.pk], now=now
    )


def shopify_customer_erase(
    *, shop: Shop, customer_id: str, email_hash: str, order_ids: list[str], now: datetime
) -> ErasureRequest:
    """customers/redact: the customer, their email's person and the orders Shopify names."""
    keys: list[Key] = []
    if customer_id:
        keys.append((IdentifierKind.SHOPIFY_CUSTOMER, customer_id))
    if email_hash:
        keys.append((IdentifierKind.EMAIL_HASH, email_hash))
    return _erase(
        shop=shop,
        kind=ErasureRequest.Kind.SHOPIFY_CUSTOMER,
        keys=keys,
        order_ids=order_ids,
        now=now,
    )


@dataclass(slots=True)
class _Identity:
    """Every identifier of the persons being erased, by kind."""

    person_ids: set[int]
    anonymous_ids: set[str]
    user_ids: set[str]
    customer_ids: set[str]
    email_hashes: set[str]

    def values(self) -> set[str]:
        return self.anonymous_ids | self.user_ids | self.customer_ids | self.email_hashes


def _identity_of(*, shop: Shop, keys: list[Key], person_ids: list[int]) -> _Identity:
    match = Q(pk__in=[])
    for kind, value in keys:
        match |= Q(kind=kind, value=value)
    found = set(person_ids) | set(
        PersonIdentifier.objects.filter(match, shop=shop).values_list("person_id", flat=True)
    )
    pairs = set(keys) | set(
        PersonIdentifier.objects.filter(shop=shop, person_id__in=found).values_list("kind", "value")
    )
    # A person's own user id is an identifier even where no identifier row names it yet.
    pairs |= {
        (IdentifierKind.USER_ID, user)
        for user in Person.objects.filter(shop=shop, pk__in=found).values_list("user_id", flat=True)
        if user
    }
    by_kind: dict[str, set[str]] = {kind: set() for kind in IdentifierKind.values}
    for kind, value in pairs:
        by_kind[kind].add(value)
    return _Identity(
        person_ids=found,
        anonymous_ids=by_kind[IdentifierKind.ANONYMOUS_ID],
        user_ids=by_kind[IdentifierKind.USER_ID],
        customer_ids=by_kind[IdentifierKind.SHOPIFY_CUSTOMER],
        email_hashes=by_kind[IdentifierKind.EMAIL_HASH],
    )


def _property_match(ids: _Identity) -> Q:
    """Server-side rows (Shopify orders and their events) name the customer in properties."""
    match = Q(pk__in=[])
    if ids.customer_ids:
        match |= Q(properties__shopify_customer_id__in=sorted(ids.customer_ids))
    if ids.email_hashes:
        match |= Q(properties__email_hash__in=sorted(ids.email_hashes))
    return match


def _unlinked_match(ids: _Identity) -> Q:
    return Q(user_id__in=sorted(ids.user_ids)) | (
        Q(user_id="") & Q(anonymous_id__in=sorted(ids.anonymous_ids))
    )


def _hours_of(queryset: QuerySet, column: str) -> set[datetime]:
    """The distinct UTC hours of a column: a bot's million events touch a few hundred hours."""
    hours = queryset.annotate(hour=TruncHour(column, tzinfo=UTC)).values_list("hour", flat=True)
    return {hour.astimezone(UTC) for hour in hours.distinct().order_by()}


def _local_days(hours: Iterable[datetime], tz: ZoneInfo) -> list[str]:
    days: set[date] = set()
    for hour in hours:
        # An hour can straddle two local days where the offset is not a whole hour.
        days.add(hour.astimezone(tz).date())
        days.add((hour + HOUR - MICROSECOND).astimezone(tz).date())
    return [day.isoformat() for day in sorted(days)]


def _id_values(value: Any, *, under_id_key: bool = False) -> Iterator[str]:
    """The payload's values under identity keys (at any depth) and every string with an "@".

    Only identity keys are compared: a short user id such as "7" must not match a quantity.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _id_values(item, under_id_key=key in PAYLOAD_ID_KEYS)
    elif isinstance(value, list):
        for item in value:
            yield from _id_values(item, under_id_key=under_id_key)
    elif isinstance(value, str):
        if under_id_key or "@" in value:
            yield value.strip()
    elif under_id_key and isinstance(value, int) and not isinstance(value, bool):
        # Ids arrive as numbers too (userId: 191167).
        yield str(value)


def _names_person(payload: Any, *, values: set[str], email_hashes: set[str]) -> bool:
    for text in _id_values(payload):
        if text in values or text.lower() in email_hashes:
            return True
        if "@" in text and identity.email_hash(text) in email_hashes:
            return True
    return False


def _rejected_naming(*, shop: Shop, ids: _Identity) -> list[int]:
    """Rejected payloads are free-form JSON, so they are read and searched here.

    They are kept only for REJECTED_EVENT_RETENTION_DAYS, which bounds the scan.
    """
    values = ids.values()
    if not values:
        return []
    found = []
    rows = RejectedEvent.objects.filter(shop=shop).order_by("pk").values_list("pk", "payload")
    for pk, payload in rows.iterator(chunk_size=REJECTED_SCAN_BATCH):
        if _names_person(payload, values=values, email_hashes=ids.email_hashes):
            found.append(pk)
    return found


def _deleted(queryset: QuerySet) -> dict[str, int]:
    """Delete and count the queryset's own rows and the cascaded rows reported separately."""
    _, per_model = queryset.delete()
    counts = {name: per_model.get(label, 0) for label, name in CASCADED.items()}
    return {"rows": per_model.get(queryset.model._meta.label, 0), **counts}


def _ids_delete(model: type[models.Model], pks: list[int]) -> int:
    removed = 0
    for chunk in chunks(pks, 1000):
        removed += _deleted(model._default_manager.filter(pk__in=chunk))["rows"]
    return removed


@dataclass(frozen=True, slots=True)
class _Rows:
    """The rows an erasure removes, found before anything is deleted."""

    event_pks: list[int]
    rejected_pks: list[int]
    order_pks: list[int]
    refunds: QuerySet[Refund]
    checkouts: QuerySet[Checkout]
    sessions: QuerySet[Session]
    hours: set[datetime]


def _rows_of(*, shop: Shop, ids: _Identity, order_ids: list[str]) -> _Rows:
    props = _property_match(ids)
    # A row linked to a person is theirs; an unlinked one (not yet processed) is theirs when it
    # carries their user id, or their browser id and no user id: on a shared device an anonymous
    # id can appear beside another user's id, and that row is the other user's.
    orders = Order.objects.filter(
        Q(person_id__in=ids.person_ids)
        | Q(order_id__in=order_ids)
        | (Q(person=None) & (_unlinked_match(ids) | props)),
        shop=shop,
    )
    checkouts = Checkout.objects.filter(
        Q(person_id__in=ids.person_ids)
        | (
            Q(person=None)
            & (
                Q(anonymous_id__in=sorted(ids.anonymous_ids))
                | Q(email_hash__in=sorted(ids.email_hashes))
            )
        ),
        shop=shop,
    )
    # The browser ids on the person's orders and checkouts are theirs as well.
    for rows in (orders, checkouts):
        ids.anonymous_ids |= set(
            rows.exclude(anonymous_id="").values_list("anonymous_id", flat=True)
        )
    order_pks = list(orders.values_list("pk", flat=True))
    events = Event.objects.filter(
        Q(person_id__in=sorted(ids.person_ids))
        # The (person, occurred_at) index finds the unlinked ones.
        | (Q(person=None) & (_unlinked_match(ids) | props)),
        shop=shop,
    )
    sessions = Session.objects.filter(shop=shop, person_id__in=ids.person_ids)
    refunds = Refund.objects.filter(
        Q(order_id__in=order_pks)
        | Q(source_order_id__in=list(orders.values_list("order_id", flat=True))),
        shop=shop,
    )
    return _Rows(
        event_pks=list(events.values_list("pk", flat=True)),
        rejected_pks=_rejected_naming(shop=shop, ids=ids),
        order_pks=order_pks,
        refunds=refunds,
        checkouts=checkouts,
        sessions=sessions,
        hours=(
            _hours_of(events, "occurred_at")
            | _hours_of(sessions, "started_at")
            | _hours_of(Order.objects.filter(pk__in=order_pks), "placed_at")
            | _hours_of(refunds, "refunded_at")
        ),
    )


def _erase(
    *,
    shop: Shop,
    kind: str,
    keys: list[Key],
    now: datetime,
    person_ids: list[int] | None = None,
    order_ids: list[str] | None = None,
) -> ErasureRequest:
    # Created outside the transaction, as events_process does, so that creating it cannot abort.
    PipelineWatermark.objects.get_or_create(job=PipelineJob.EVENTS, shop_id=shop.pk)
    with transaction.atomic():
        # The pipeline holds this lock while it stitches a batch: taking it here means a batch
        # cannot read the person's events, then write sessions and a person for them after
        # they are gone. Nothing else writes a shop's persons or sessions.
        PipelineWatermark.objects.select_for_update().get(job=PipelineJob.EVENTS, shop_id=shop.pk)
        ids = _identity_of(shop=shop, keys=keys, person_ids=person_ids or [])
        rows = _rows_of(shop=shop, ids=ids, order_ids=order_ids or [])
        # Children before parents: deleting a person first would null the person (and session)
        # of every one of their events, only to delete them next.
        counts = {
            "events": _ids_delete(Event, rows.event_pks),
            "rejected_events": _ids_delete(RejectedEvent, rows.rejected_pks),
            "refunds": _deleted(rows.refunds)["rows"],
            "orders": _ids_delete(Order, rows.order_pks),
            "checkouts": _deleted(rows.checkouts)["rows"],
        }
        sessions = _deleted(rows.sessions)
        identifiers = _deleted(
            PersonIdentifier.objects.filter(shop=shop, person_id__in=ids.person_ids)
        )
        persons = _deleted(Person.objects.filter(shop=shop, pk__in=ids.person_ids))
        counts |= {
            "sessions": sessions["rows"],
            "identifiers": identifiers["rows"],
            "persons": persons["rows"],
            "segment_memberships": persons["segment_memberships"],
            "conversion_scores": sessions["conversion_scores"] + persons["conversion_scores"],
            "webhook_deliveries": _deleted(
                WebhookDelivery.objects.filter(shop=shop, customer_id__in=ids.customer_ids)
            )["rows"],
            "data_exports": _deleted(
                PrivacyRequest.objects.filter(
                    shop=shop,
                    kind=PrivacyRequest.Kind.DATA_REQUEST,
                    shopify_customer_id__in=ids.customer_ids,
                )
            )["rows"],
        }
        request = ErasureRequest.objects.create(
            shop=shop,
            kind=kind,
            requested_at=now,
            counts=counts,
            days=_local_days(rows.hours, ZoneInfo(shop.timezone)),
        )
        transaction.on_commit(lambda: erasures_complete_schedule(shop_id=shop.pk))
    return request


def shop_erase(*, shop: Shop, keep_delivery_id: int, now: datetime) -> ErasureRequest:
    """shop/redact: erase all of the shop's data; the Shop row stays, inactive, as the record."""
    with transaction.atomic():
        counts = {
            "events": _deleted(Event.objects.filter(shop=shop))["rows"],
            "rejected_events": _deleted(RejectedEvent.objects.filter(shop=shop))["rows"],
            "sessions": _deleted(Session.objects.filter(shop=shop))["rows"],
            "refunds": _deleted(Refund.objects.filter(shop=shop))["rows"],
            "orders": _deleted(Order.objects.filter(shop=shop))["rows"],
            "checkouts": _deleted(Checkout.objects.filter(shop=shop))["rows"],
            "products": _deleted(Product.objects.filter(shop=shop))["rows"],
            "identifiers": _deleted(PersonIdentifier.objects.filter(shop=shop))["rows"],
            **_persons_all_deleted(shop=shop),
            "webhook_deliveries": _deleted(
                WebhookDelivery.objects.filter(shop=shop).exclude(pk=keep_delivery_id)
            )["rows"],
            "privacy_requests": _deleted(PrivacyRequest.objects.filter(shop=shop))["rows"],
        }
        PipelineWatermark.objects.filter(job=PipelineJob.EVENTS, shop_id=shop.pk).delete()
        shop.is_active = False
        shop.save(update_fields=["is_active"])
        request = ErasureRequest.objects.create(
            shop=shop, kind=ErasureRequest.Kind.SHOP, requested_at=now, counts=counts, days=None
        )
        transaction.on_commit(lambda: erasures_complete_schedule(shop_id=shop.pk))
    return request


def _persons_all_deleted(*, shop: Shop) -> dict[str, int]:
    persons = _deleted(Person.objects.filter(shop=shop))
    return {
        "persons": persons["rows"],
        "segment_memberships": persons["segment_memberships"],
        "conversion_scores": persons["conversion_scores"],
    }


def erasures_complete_schedule(*, shop_id: int) -> None:
    """Send the recompute to a worker; with the broker down the beat sweep finds it pending."""
    # events.tasks imports this module for its task bodies.
    from events.tasks import erasures_complete_task

    try:
        erasures_complete_task.delay(shop_id)
    except BrokerError:
        logger.warning("erasure recompute of shop %s not sent; the sweep will run it", shop_id)


@dataclass(frozen=True, slots=True)
class CompleteResult:
    requests: int
    days: int | None


def erasures_complete(*, shop_id: int, now: datetime) -> CompleteResult:
    """Recompute what the shop's pending erasures touched, then mark them complete.

    Only the requests read at the start are marked: one recorded meanwhile stays pending for
    the next run, so no request is marked before its days were recomputed.
    """
    pending = list(
        ErasureRequest.objects.filter(shop_id=shop_id, completed_at=None).values_list("pk", "days")
    )
    if not pending:
        return CompleteResult(requests=0, days=0)
    named = [request_days for _, request_days in pending if request_days is not None]
    # One whole-shop request makes the run a whole-shop one.
    days: list[str] | None = sorted({day for request_days in named for day in request_days})
    if len(named) < len(pending):
        days = None
    follow_ups.recompute_run(shop_id=shop_id, days=days)
    ErasureRequest.objects.filter(pk__in=[pk for pk, _ in pending]).update(completed_at=now)
    return CompleteResult(requests=len(pending), days=None if days is None else len(days))
