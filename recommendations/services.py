"""Every write of the recommendations app: the item-to-item affinity table."""

import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction

from events.models import Event, Session
from recommendations import ranking
from recommendations.models import ProductAffinity

logger = logging.getLogger(__name__)

AFFINITY_WINDOW_DAYS = 90
SESSION_BATCH = 2000
# Bounds memory and run time on the biggest shops: the newest sessions are read first.
MAX_SESSIONS = 500_000
WRITE_BATCH = 2000


@dataclass(frozen=True, slots=True)
class AffinityResult:
    shop_id: int
    sessions: int
    products: int
    pairs: int


def session_products(*, shop_id: int, start: datetime, end: datetime) -> Iterator[list[str]]:
    """Each session's product ids in event order; sessions newest first, in batches by id."""
    sessions = Session.objects.filter(shop_id=shop_id, started_at__gte=start, started_at__lt=end)
    last_id: int | None = None
    for _ in range(0, MAX_SESSIONS, SESSION_BATCH):
        page = sessions if last_id is None else sessions.filter(id__lt=last_id)
        ids = list(page.order_by("-id").values_list("id", flat=True)[:SESSION_BATCH])
        if not ids:
            return
        last_id = ids[-1]
        products: dict[int, list[str]] = defaultdict(list)
        for session_id, product_id in (
            Event.objects.filter(
                shop_id=shop_id, session_id__in=ids, type__in=list(ranking.WEIGHTS)
            )
            .exclude(product_id="")
            .order_by("session_id", "occurred_at", "id")
            .values_list("session_id", "product_id")
        ):
            products[session_id].append(product_id)
        yield from products.values()


def affinity_rebuild(*, shop_id: int, now: datetime) -> AffinityResult:
    """Replace the shop's affinity table with co-occurrence over the last 90 days of sessions."""
    sessions = 0

    def counted() -> Iterator[list[str]]:
        nonlocal sessions
        for products in session_products(
            shop_id=shop_id, start=now - timedelta(days=AFFINITY_WINDOW_DAYS), end=now
        ):
            sessions += 1
            yield products

    table = ranking.affinity_from_sessions(counted())
    rows = [
        ProductAffinity(
            shop_id=shop_id,
            product_id=pid,
            other_product_id=other,
            score=score,
            session_count=n,
            updated_at=now,
        )
        for pid, neighbours in table.items()
        for other, score, n in neighbours
    ]
    # Readers see the old table or the new one, never a half-written mix.
    with transaction.atomic():
        ProductAffinity.objects.filter(shop_id=shop_id).delete()
        ProductAffinity.objects.bulk_create(rows, batch_size=WRITE_BATCH)
    result = AffinityResult(
        shop_id=shop_id, sessions=sessions, products=len(table), pairs=len(rows)
    )
    logger.info("affinity rebuilt: %s", result)
    return result
