"""The live event stream: the newest events after a cursor."""

from dataclasses import dataclass
from datetime import datetime

from clickserver.db_routers import analytics_db
from events.models import Event, Shop


@dataclass(frozen=True, slots=True)
class LiveEvent:
    id: int
    type: str
    occurred_at: datetime
    anonymous_id: str
    user_id: str
    url: str
    product_id: str
    product_name: str
    country: str


@dataclass(frozen=True, slots=True)
class Live:
    rows: list[LiveEvent]
    last_id: int


def live_get(*, shop: Shop, since_id: int, limit: int) -> Live:
    """The newest events after `since_id` (at most `limit`), oldest first by event time.

    "Newest" is by arrival (`id`), the cursor the stream polls with; within the answer the rows
    are ordered by `occurred_at` (then id), since a batch can carry events out of time order.
    `last_id` is the highest id returned, whatever its position.
    """
    fields = list(LiveEvent.__dataclass_fields__)
    rows = list(
        Event.objects.using(analytics_db())
        .filter(shop_id=shop.pk, id__gt=since_id)
        .order_by("-id")
        .values_list(*fields)[:limit]
    )
    events = sorted((LiveEvent(*row) for row in rows), key=lambda e: (e.occurred_at, e.id))
    return Live(rows=events, last_id=max((e.id for e in events), default=since_id))
