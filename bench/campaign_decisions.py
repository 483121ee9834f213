"""`campaign_decisions_run` for one shop's live sessions: seconds for the first run (every session
evaluated, decisions stored) and for a re-run (every session already decided).

    DATABASE_URL=mysql://root@127.0.0.1:3306/clickserver python bench/campaign_decisions.py \
        --sessions 2000 --events 10

Needs a migrated database. Creates (or resets) one shop with N live sessions of E events each
(the last an add_to_cart), a live score per session (uniform on [0, 1)) and two running
campaigns: a score band 0.2–0.6 and an abandoned cart. Prints one JSON object.
"""

import argparse
import os
import random
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickserver.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
django.setup()

import orjson  # noqa: E402
from django.utils import timezone  # noqa: E402

from events.models import Event, Person, Session, Shop  # noqa: E402
from notifications.campaigns import decisions, services  # noqa: E402
from notifications.campaigns.rules import ContentIn  # noqa: E402
from notifications.models import CampaignDecision, ConversionScore  # noqa: E402

DOMAIN = "bench-campaign-decisions.example.com"
CONTENT = ContentIn(key="nudge", title="Hi {first_name}", body="{product}", cta_url="/cart")


def shop_reset(*, sessions: int, events: int):
    for model in (CampaignDecision, ConversionScore, Event, Session, Person):
        model.objects.filter(shop__domain=DOMAIN).delete()
    Shop.objects.filter(domain=DOMAIN).delete()
    shop = Shop.objects.create(domain=DOMAIN, name="Bench campaign decisions")
    now = timezone.now()
    rng = random.Random(7)
    people = Person.objects.bulk_create(
        Person(shop=shop, first_seen_at=now, last_seen_at=now, traits={"first_name": f"P{n}"})
        for n in range(sessions)
    )
    live = Session.objects.bulk_create(
        Session(shop=shop, person=p, started_at=now - timedelta(minutes=20), ended_at=now)
        for p in people
    )
    rows = []
    for n, session in enumerate(live):
        for k in range(events):
            rows.append(
                Event(
                    shop=shop,
                    event_id=f"e-{n}-{k}",
                    type="add_to_cart" if k == events - 1 else "product_view",
                    anonymous_id=f"visitor-{n}",
                    occurred_at=now - timedelta(minutes=20 - k),
                    received_at=now,
                    product_id=f"p{k % 3}",
                    product_name=f"Product {k % 3}",
                    product_price=Decimal("9.90"),
                    product_quantity=1,
                    session=session,
                    person_id=session.person_id,
                )
            )
    Event.objects.bulk_create(rows, batch_size=5000)
    ConversionScore.objects.bulk_create(
        ConversionScore(
            shop=shop, session=s, person_id=s.person_id, score=rng.random(), scored_at=now
        )
        for s in live
    )
    for key, trigger in (
        ("band", {"kind": "score_band", "low": 0.2, "high": 0.6}),
        ("cart", {"kind": "cart_abandoned", "minutes": 5}),
    ):
        campaign = services.campaign_create(
            shop=shop, key=key, name=key, trigger=trigger, variants=[CONTENT], now=now
        )
        services.campaign_start(campaign=campaign, now=now)
    return shop, now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--events", type=int, default=10)
    args = parser.parse_args()

    shop, now = shop_reset(sessions=args.sessions, events=args.events)
    started = time.perf_counter()
    first = decisions.campaign_decisions_run(shop_id=shop.pk, now=now)
    first_seconds = time.perf_counter() - started
    started = time.perf_counter()
    again = decisions.campaign_decisions_run(shop_id=shop.pk, now=now)
    again_seconds = time.perf_counter() - started
    report = {
        "sessions": args.sessions,
        "events_per_session": args.events,
        "first": {
            "seconds": round(first_seconds, 3),
            "decisions": first.decisions,
            "holdout": first.holdout,
        },
        "rerun": {"seconds": round(again_seconds, 3), "decisions": again.decisions},
    }
    for model in (CampaignDecision, ConversionScore, Event, Session, Person):
        model.objects.filter(shop=shop).delete()
    shop.delete()
    print(orjson.dumps(report).decode())


if __name__ == "__main__":
    main()
