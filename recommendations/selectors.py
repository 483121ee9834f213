"""Every read of the recommendations app: the merged catalogue and the three storefront lists."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Max, Q
from django.db.models.functions import TruncDate

from events.models import Event, IdentifierKind, OrderLine, PersonIdentifier, Product, Shop
from recommendations import ranking
from recommendations.models import ProductAffinity

# Storefronts call the recommendation endpoints on every page view; a few minutes of staleness
# is fine.
CACHE_SECONDS = 300
CROWD_WINDOW_DAYS = 30
PERSON_WINDOW_DAYS = 30
CATALOGUE_EVENT_DAYS = 90
SEEDS = 20
PRODUCT_TYPES = ("product_view", "add_to_cart", "purchase")


@dataclass(frozen=True, slots=True)
class Recommendation:
    product_id: str
    name: str
    category: str
    price: Decimal | None
    url: str
    image_url: str
    score: float
    reason: str  # also_viewed | popular | viewed | carted
    last_interaction_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CatalogueItem:
    product_id: str
    name: str
    category: str
    price: Decimal | None
    url: str
    image_url: str
    is_available: bool


def person_resolve(*, shop: Shop, anonymous_id: str = "", user_id: str = "") -> int | None:
    """The person behind a storefront's ids; the user id wins when both are given."""
    for kind, value in (
        (IdentifierKind.USER_ID, user_id),
        (IdentifierKind.ANONYMOUS_ID, anonymous_id),
    ):
        if value:
            person_id = (
                PersonIdentifier.objects.filter(shop=shop, kind=kind, value=value)
                .values_list("person_id", flat=True)
                .first()
            )
            if person_id is not None:
                return person_id
    return None


def catalogue_get(*, shop: Shop, product_ids: list[str], now: datetime) -> dict[str, CatalogueItem]:
    """Shopify's products (webhook-synced) first; products known only from events fill in."""
    items = {
        p.product_id: CatalogueItem(
            p.product_id, p.title, p.category, p.price, p.url, p.image_url, p.is_available
        )
        for p in Product.objects.filter(shop=shop, product_id__in=product_ids)
    }
    missing = [pid for pid in product_ids if pid not in items]
    if missing:
        rows = (
            Event.objects.filter(
                shop=shop,
                product_id__in=missing,
                occurred_at__gte=now - timedelta(days=CATALOGUE_EVENT_DAYS),
            )
            .values_list("product_id")
            .annotate(Max("product_name"), Max("product_category"), Max("product_price"))
            .order_by()
        )
        for pid, name, category, price in rows:
            items[pid] = CatalogueItem(pid, name or "", category or "", price, "", "", True)
    for pid in product_ids:
        items.setdefault(pid, CatalogueItem(pid, "", "", None, "", "", True))
    return items


def _render(
    *,
    shop: Shop,
    ranked: list[ranking.Ranked],
    now: datetime,
    limit: int,
    last: dict[str, datetime] | None = None,
) -> list[Recommendation]:
    catalogue = catalogue_get(shop=shop, product_ids=[r.product_id for r in ranked], now=now)
    out: list[Recommendation] = []
    for r in ranked:
        item = catalogue[r.product_id]
        if item.is_available and len(out) < limit:
            out.append(
                Recommendation(
                    item.product_id,
                    item.name,
                    item.category,
                    item.price,
                    item.url,
                    item.image_url,
                    r.score,
                    r.reason,
                    (last or {}).get(r.product_id),
                )
            )
    return out


def crowd_scores_get(
    *, shop: Shop, now: datetime, days: int = CROWD_WINDOW_DAYS
) -> dict[str, float]:
    rows = (
        Event.objects.filter(
            shop=shop,
            type__in=list(ranking.WEIGHTS),
            occurred_at__gte=now - timedelta(days=days),
            occurred_at__lt=now,
        )
        .exclude(product_id="")
        .annotate(day=TruncDate("occurred_at"))
        .values_list("product_id", "type", "day")
        .annotate(n=Count("id"))
        .order_by()
    )
    today = now.date()
    return ranking.crowd_scores((pid, t, (today - day).days, n) for pid, t, day, n in rows)


def _bought(*, shop: Shop, person_id: int) -> set[str]:
    from_events = Event.objects.filter(shop=shop, person_id=person_id, type="purchase").exclude(
        product_id=""
    )
    from_orders = OrderLine.objects.filter(order__shop=shop, order__person_id=person_id).exclude(
        product_id=""
    )
    return set(from_events.values_list("product_id", flat=True)) | set(
        from_orders.values_list("product_id", flat=True)
    )


def _recent(*, shop: Shop, person_id: int, now: datetime, types: tuple[str, ...]) -> list[tuple]:
    """(product_id, last interaction, was carted) for the person's products, most recent first."""
    return list(
        Event.objects.filter(
            person_id=person_id,
            shop=shop,
            type__in=types,
            occurred_at__gte=now - timedelta(days=PERSON_WINDOW_DAYS),
            occurred_at__lt=now,
        )
        .exclude(product_id="")
        .values_list("product_id")
        .annotate(last=Max("occurred_at"), carts=Count("id", filter=Q(type="add_to_cart")))
        .order_by("-last", "product_id")
    )


def crowd_favorites_get(*, shop: Shop, now: datetime, limit: int) -> list[Recommendation]:
    ranked = ranking.top(crowd_scores_get(shop=shop, now=now), limit=limit * 2)
    return _render(shop=shop, ranked=ranked, now=now, limit=limit)


def featured_collection_get(
    *, shop: Shop, person_id: int | None, now: datetime, limit: int
) -> list[Recommendation]:
    crowd = ranking.top(crowd_scores_get(shop=shop, now=now), limit=limit * 3)
    seeds: list[str] = []
    exclude: set[str] = set()
    if person_id is not None:
        recent = _recent(shop=shop, person_id=person_id, now=now, types=PRODUCT_TYPES)
        seeds = [row[0] for row in recent[:SEEDS]]
        exclude = _bought(shop=shop, person_id=person_id)
    neighbours: dict[str, list[tuple[str, float]]] = {}
    for pid, other, score in ProductAffinity.objects.filter(
        shop=shop, product_id__in=seeds
    ).values_list("product_id", "other_product_id", "score"):
        neighbours.setdefault(pid, []).append((other, score))
    ranked = ranking.featured_rank(
        seeds=seeds,
        neighbours=neighbours,
        fallback=[r.product_id for r in crowd],
        exclude=exclude,
        limit=limit * 2,
    )
    return _render(shop=shop, ranked=ranked, now=now, limit=limit)


def pick_up_get(
    *, shop: Shop, person_id: int | None, now: datetime, limit: int
) -> list[Recommendation]:
    if person_id is None:
        return []
    bought = _bought(shop=shop, person_id=person_id)
    recent = _recent(shop=shop, person_id=person_id, now=now, types=("product_view", "add_to_cart"))
    ranked, last = [], {}
    for pid, at, carts in recent:
        if pid not in bought:
            ranked.append(ranking.Ranked(pid, 0.0, "carted" if carts else "viewed"))
            last[pid] = at
    return _render(shop=shop, ranked=ranked[: limit * 2], now=now, limit=limit, last=last)
