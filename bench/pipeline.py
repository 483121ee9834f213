"""Pipeline throughput: insert N events through the fast path, time events_process catching up.

    DATABASE_URL=mysql://root@127.0.0.1:3306/clickserver python bench/pipeline.py --events 200000

Traffic looks like a live shop's: events arrive in time order, interleaved across visitors, so
every batch touches thousands of people and extends their open sessions; a tenth of the visitors
sign in part-way (identity merges) and about one session in fifty ends in a purchase. Prints
{events, persons, sessions, seconds, events_per_s} as JSON.
"""

import argparse
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import django
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickserver.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
django.setup()

from django.conf import settings  # noqa: E402

from events import services  # noqa: E402
from events.models import Person, Session  # noqa: E402
from events.validation import EventIn  # noqa: E402

START = datetime(2026, 1, 5, tzinfo=UTC)
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
]
TYPES = ["page_view"] * 6 + ["product_view"] * 3 + ["add_to_cart"]


def generate(count: int, *, persons: int, seed: int) -> list[EventIn]:
    rng = random.Random(seed)
    per_person = max(count // persons, 1)
    events: list[EventIn] = []
    for person in range(persons):
        at = START + timedelta(seconds=rng.randrange(0, 3 * 86400))
        user_agent = rng.choice(USER_AGENTS)
        signs_in_at = rng.randrange(per_person) if person % 10 == 0 else None
        for step in range(per_person):
            # Mostly seconds to minutes apart, sometimes a new visit hours later.
            at += timedelta(seconds=rng.choice([5, 20, 60, 240, 900, 4 * 3600]))
            is_purchase = rng.random() < 0.01
            events.append(
                EventIn(
                    event_id=uuid.UUID(int=rng.getrandbits(128)).hex,
                    type="purchase" if is_purchase else rng.choice(TYPES),
                    occurred_at=at,
                    anonymous_id=f"anon-{seed}-{person}",
                    user_id=f"user-{seed}-{person}"
                    if signs_in_at is not None and step >= signs_in_at
                    else "",
                    url=f"https://bench.example/p/{rng.randrange(500)}",
                    referrer="https://www.google.com/" if step == 0 else "",
                    utm_source="google" if step == 0 and person % 3 == 0 else "",
                    user_agent=user_agent,
                    revenue=Decimal("49.90") if is_purchase else None,
                    country="DE",
                )
            )
    events.sort(key=lambda event: event.occurred_at)
    return events[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--persons", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=settings.PIPELINE_BATCH_SIZE)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    domain = f"bench-{uuid.uuid4().hex[:8]}.example"
    shop = services.shop_create(domain=domain, owner_username="bench").shop
    events = generate(args.events, persons=args.persons, seed=args.seed)
    received_at = datetime.now(UTC) - timedelta(hours=1)
    for start in range(0, len(events), 2000):
        services.events_insert(
            shop_id=shop.pk, events=events[start : start + 2000], received_at=received_at
        )

    now = datetime.now(UTC)
    started = time.perf_counter()
    processed = 0
    while True:
        result = services.events_process(shop_id=shop.pk, now=now, batch_size=args.batch_size)
        processed += result.processed
        if not result.has_more:
            break
    seconds = time.perf_counter() - started
    print(
        orjson.dumps(
            {
                "events": processed,
                "persons": Person.objects.filter(shop=shop).count(),
                "sessions": Session.objects.filter(shop=shop).count(),
                "batch_size": args.batch_size,
                "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
                "seconds": round(seconds, 2),
                "events_per_s": round(processed / seconds),
            }
        ).decode()
    )
    shop.delete()


if __name__ == "__main__":
    main()
