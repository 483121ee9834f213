"""Every read of the events app that an interface needs."""

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Exists, OuterRef, QuerySet

from clickserver.errors import ApplicationError
from events.models import (
    ErasureRequest,
    Event,
    PipelineJob,
    PipelineWatermark,
    Session,
    Shop,
    ShopMembership,
)

# Write keys are public and looked up on every ingest request; a short process-local cache saves a
# query per request. A rotated key stops working within this many seconds.
WRITE_KEY_CACHE_SECONDS = 10.0
_write_keys: dict[str, tuple[float, Shop | None]] = {}


def shop_get_by_write_key(*, write_key: str) -> Shop | None:
    now = time.monotonic()
    cached = _write_keys.get(write_key)
    if cached and cached[0] > now:
        return cached[1]
    shop = Shop.objects.filter(write_key=write_key, is_active=True).first()
    if len(_write_keys) > 10_000:
        _write_keys.clear()
    _write_keys[write_key] = (now + WRITE_KEY_CACHE_SECONDS, shop)
    return shop


def write_key_cache_clear() -> None:
    _write_keys.clear()


def shops_for_user(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Shop]:
    if not user.is_authenticated:
        return Shop.objects.none()
    if getattr(user, "is_superuser", False):
        return Shop.objects.all()
    return Shop.objects.filter(memberships__user_id=user.pk)


def shops_owned_by(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Shop]:
    """The shops whose settings, members, keys and secrets this user may change."""
    if not user.is_authenticated:
        return Shop.objects.none()
    if getattr(user, "is_superuser", False):
        return Shop.objects.all()
    return Shop.objects.filter(
        memberships__user_id=user.pk, memberships__role=ShopMembership.Role.OWNER
    )


def shop_get_for_user(*, user: AbstractBaseUser | AnonymousUser, domain: str | None) -> Shop:
    """The shop named by `domain` if the user is a member; the only one if they have one.

    A shop the user cannot see answers 404, the same as one that does not exist, so shop
    domains do not leak.
    """
    shops = shops_for_user(user=user)
    if domain:
        shop = shops.filter(domain=domain).first()
        if shop is None:
            raise ApplicationError("No such shop.", code="not_found", status=404)
        return shop
    candidates = list(shops[:2])
    if len(candidates) == 1:
        return candidates[0]
    raise ApplicationError(
        "Name the shop with ?shop=DOMAIN.", code="invalid", fields={"shop": ["required"]}
    )


def shop_get_for_owner(
    *, user: AbstractBaseUser | AnonymousUser, domain: str | None, action: str
) -> Shop:
    """The shop as `shop_get_for_user` finds it (404 where the user is no member), if the user
    is one of its owners (or a superuser): 403 for its analysts, whose role reads and never acts
    (a change that reaches shoppers, such as a campaign's, is the owners' to make)."""
    shop = shop_get_for_user(user=user, domain=domain)
    if not shops_owned_by(user=user).filter(pk=shop.pk).exists():
        raise ApplicationError(
            f"Only the shop's owners may {action}.", code="permission_denied", status=403
        )
    return shop


# Counting a backlog stops here: the figure is for alerts and the admin, and counting millions of
# index entries on every readiness probe would make the probe the slowest query in the system.
BACKLOG_COUNT_CAP = 100_000


@dataclass(frozen=True, slots=True)
class ShopBacklog:
    shop_id: int
    position: int
    events: int
    is_capped: bool
    oldest_unprocessed_at: datetime | None


@dataclass(frozen=True, slots=True)
class StuckShop:
    shop_id: int
    domain: str
    oldest_unprocessed_at: datetime | None
    failed_at: datetime | None
    error: str


@dataclass(frozen=True, slots=True)
class Backlog:
    events: int
    oldest_unprocessed_at: datetime | None
    is_capped: bool = False
    stuck: tuple[StuckShop, ...] = ()


def active_shop_ids() -> list[int]:
    """The shops the periodic sweeps (pipeline, rollups, segments, models) work for."""
    return list(Shop.objects.filter(is_active=True).values_list("id", flat=True))


def _pipeline_positions() -> dict[int, int]:
    """Each shop's pipeline watermark, in one query (0 for a shop never processed)."""
    rows = PipelineWatermark.objects.filter(job=PipelineJob.EVENTS).values_list(
        "shop_id", "position"
    )
    return dict(rows)


def shops_with_backlog(*, settled_before: datetime) -> list[int]:
    """Active shops with unprocessed events received before `settled_before`."""
    positions = _pipeline_positions()
    shop_ids = []
    for shop_id in active_shop_ids():
        position = positions.get(shop_id, 0)
        if (
            Event.objects.filter(
                shop_id=shop_id, id__gt=position, received_at__lt=settled_before
            ).exists()
            or Event.objects.filter(
                shop_id=shop_id,
                person__isnull=True,
                id__lte=position,
                received_at__lt=settled_before,
            ).exists()
        ):
            shop_ids.append(shop_id)
    return shop_ids


def shop_backlog(*, shop_id: int, position: int | None = None) -> ShopBacklog:
    """Unprocessed events of one shop (at most BACKLOG_COUNT_CAP counted) and the oldest one.

    Every query walks an index range from the watermark ((shop_id, id) above it, (shop_id,
    person_id, id) for stragglers below it), never the whole log.
    """
    if position is None:
        position = (
            PipelineWatermark.objects.filter(job=PipelineJob.EVENTS, shop_id=shop_id)
            .values_list("position", flat=True)
            .first()
            or 0
        )
    pending = Event.objects.filter(shop_id=shop_id, id__gt=position)
    stragglers = Event.objects.filter(shop_id=shop_id, person__isnull=True, id__lte=position)
    count = pending.values("id")[:BACKLOG_COUNT_CAP].count()
    count += stragglers.values("id")[:BACKLOG_COUNT_CAP].count()
    # The lowest id is the oldest insert among each side's rows.
    firsts = (
        [
            queryset.order_by("id").values_list("received_at", flat=True).first()
            for queryset in (stragglers, pending)
        ]
        if count
        else []
    )
    oldest = min((at for at in firsts if at is not None), default=None)
    return ShopBacklog(
        shop_id=shop_id,
        position=position,
        events=count,
        is_capped=count >= BACKLOG_COUNT_CAP,
        oldest_unprocessed_at=oldest,
    )


def processing_backlog(*, stuck_before: datetime | None = None) -> Backlog:
    """Events not yet processed (beyond their shop's watermark), and the oldest one's time.

    With `stuck_before`, also the shops that are stuck: an unprocessed event received before
    it, or a last batch that failed.
    """
    watermarks = {
        shop_id: (position, failed_at, error)
        for shop_id, position, failed_at, error in PipelineWatermark.objects.filter(
            job=PipelineJob.EVENTS
        ).values_list("shop_id", "position", "failed_at", "error")
    }
    total = 0
    is_capped = False
    oldest: datetime | None = None
    stuck: list[StuckShop] = []
    for shop_id, domain in Shop.objects.order_by("id").values_list("id", "domain"):
        position, failed_at, error = watermarks.get(shop_id, (0, None, ""))
        backlog = shop_backlog(shop_id=shop_id, position=position)
        total += backlog.events
        is_capped = is_capped or backlog.is_capped
        first = backlog.oldest_unprocessed_at
        if first and (oldest is None or first < oldest):
            oldest = first
        if stuck_before is not None and (
            failed_at is not None or (first is not None and first < stuck_before)
        ):
            stuck.append(StuckShop(shop_id, domain, first, failed_at, error))
    return Backlog(
        events=total, oldest_unprocessed_at=oldest, is_capped=is_capped, stuck=tuple(stuck)
    )


def shop_get_by_domain(*, domain: str) -> Shop | None:
    """Inactive shops too: Shopify sends shop/redact after app/uninstalled."""
    if not domain:
        return None
    return Shop.objects.filter(domain__iexact=domain.strip()).first()


@dataclass(frozen=True, slots=True)
class Traffic:
    """The shop's recent traffic, as the live traffic simulator matches it."""

    visits_per_second: float  # sessions started per second over the period
    returning_share: float  # share of those sessions whose person had an earlier session
    visitors: list[tuple[str, str]]  # (anonymous_id, user_id) pairs seen in the period


def shop_traffic_get(*, shop: Shop, now: datetime, days: int = 28, limit: int = 5000) -> Traffic:
    """Sessions per second and the returning share over `[now - days, now)`.

    The period is cut to the shop's first session, so a shop with a week of history is not
    averaged over four. No sessions: a rate of 0.0.
    """
    since = now - timedelta(days=days)
    sessions = Session.objects.filter(shop=shop, started_at__gte=since, started_at__lt=now)
    first = sessions.order_by("started_at").values_list("started_at", flat=True).first()
    if first is None:
        return Traffic(visits_per_second=0.0, returning_share=0.0, visitors=[])
    total = sessions.count()
    earlier = Session.objects.filter(shop=shop, person_id=OuterRef("person_id"))
    returning = sessions.filter(
        Exists(earlier.filter(started_at__lt=OuterRef("started_at")))
    ).count()
    visitors = list(
        Event.objects.filter(shop=shop, occurred_at__gte=since, occurred_at__lt=now)
        .exclude(anonymous_id="")
        .values_list("anonymous_id", "user_id")
        .order_by("anonymous_id", "user_id")
        .distinct()[:limit]
    )
    seconds = max((now - first).total_seconds(), 3600.0)
    return Traffic(
        visits_per_second=total / seconds, returning_share=returning / total, visitors=visitors
    )


# Who may erase a person: the shop's owners ("admin" is accepted for shops whose roles have it).
ERASURE_ROLES = frozenset({ShopMembership.Role.OWNER.value, "admin"})


def shop_get_for_eraser(*, user: AbstractBaseUser | AnonymousUser, domain: str | None) -> Shop:
    """The shop as `shop_get_for_user` finds it, if the user's role there may erase people."""
    shop = shop_get_for_user(user=user, domain=domain)
    if getattr(user, "is_superuser", False):
        return shop
    role = (
        ShopMembership.objects.filter(shop=shop, user__pk=user.pk or 0)
        .values_list("role", flat=True)
        .first()
    )
    if role not in ERASURE_ROLES:
        raise ApplicationError(
            "Only the shop's owners may erase people.", code="permission_denied", status=403
        )
    return shop


def erasure_requests_list(*, shop: Shop) -> QuerySet[ErasureRequest]:
    return ErasureRequest.objects.filter(shop=shop).order_by("-requested_at", "-id")


def shops_awaiting_sessions_rebuild(*, requested_before: datetime) -> list[int]:
    """Shops whose session timeout changed before then and whose sessions are not rebuilt."""
    return list(
        Shop.objects.filter(sessions_rebuild_requested_at__lt=requested_before)
        .values_list("pk", flat=True)
        .order_by("pk")
    )


def erasures_pending_shop_ids() -> list[int]:
    """Shops with an erasure whose derived data is not yet recomputed."""
    return list(
        ErasureRequest.objects.filter(completed_at=None)
        .values_list("shop_id", flat=True)
        .distinct()
        .order_by()
    )
