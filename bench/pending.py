"""`GET /notifications/pending/` latency: p50/p99 over N requests through the Django test client.

    DATABASE_URL=mysql://root@127.0.0.1:3306/clickserver REDIS_URL=redis://127.0.0.1:6379/1 \
        python bench/pending.py --requests 2000

Needs a migrated database. Creates (or resets) one shop with a running campaign and a decision
for every other one of 500 visitors (a third of those in the holdout). Two runs, each after one
untimed warm-up request: `cold`, every visitor's first ask after the cache was emptied (the
database read: one indexed query for the browser's latest live decision), and `cached`, N asks
spread over the visitors (the steady state of a storefront polling every few seconds). Requests go
through the test client in this process: the figures hold the view, auth, the throttle, Redis and
JSON, not the network. Prints one JSON object; target p99 ≤ 10 ms.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickserver.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "0")  # the test client speaks plain HTTP
os.environ.setdefault("STOREFRONT_RATE_LIMIT_REQUESTS", "100000000")
django.setup()

import orjson  # noqa: E402
from django.conf import settings  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from events.models import Person, Session, Shop  # noqa: E402
from notifications.campaigns import services  # noqa: E402
from notifications.campaigns.rules import ContentIn  # noqa: E402
from notifications.models import CampaignDecision  # noqa: E402

DOMAIN = "bench-pending.example.com"
VISITORS = 500
CONTENT = ContentIn(key="nudge", title="Hi", body="Your cart is waiting", cta_url="/cart")


def shop_reset() -> Shop:
    Shop.objects.filter(domain=DOMAIN).delete()
    shop = Shop.objects.create(domain=DOMAIN, name="Bench pending")
    now = timezone.now()
    campaign = services.campaign_create(
        shop=shop,
        key="nudge",
        name="Nudge",
        trigger={"kind": "checkout_started"},
        variants=[CONTENT],
        holdout_share=0.3,
        is_consent_required=False,
        now=now,
    )
    campaign = services.campaign_start(campaign=campaign, now=now)
    for n in range(0, VISITORS, 2):
        person = Person.objects.create(shop=shop, first_seen_at=now, last_seen_at=now)
        session = Session.objects.create(shop=shop, person=person, started_at=now, ended_at=now)
        CampaignDecision.objects.create(
            campaign=campaign,
            shop=shop,
            session=session,
            person=person,
            anonymous_id=f"visitor-{n}",
            unit_id=f"anon:visitor-{n}",
            phase=1,
            arm="holdout" if n % 3 == 0 else "nudge",
            is_holdout=n % 3 == 0,
            reason="bench",
            title="Hi",
            body="Your cart is waiting",
            cta_url="/cart",
            created_at=now,
        )
    return shop


def timed_run(client: APIClient, *, requests: int, key: str) -> dict[str, float]:
    headers = {"X-Write-Key": key}
    client.get("/notifications/pending/", {"anonymous_id": "warm-up"}, headers=headers)
    timings = []
    cpu_started = time.process_time()
    for n in range(requests):
        query = {"anonymous_id": f"visitor-{n % VISITORS}"}
        started = time.perf_counter()
        response = client.get("/notifications/pending/", query, headers=headers)
        timings.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"pending: {response.status_code} {response.content[:300]!r}")
    cpu_ms = (time.process_time() - cpu_started) * 1000 / requests
    timings.sort()
    return {
        "cpu_ms_per_request": round(cpu_ms, 3),
        "p50_ms": round(statistics.median(timings), 3),
        "p99_ms": round(timings[max(int(len(timings) * 0.99) - 1, 0)], 3),
        "max_ms": round(timings[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2_000)
    args = parser.parse_args()

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    shop = shop_reset()
    client = APIClient()
    report: dict = {"requests": args.requests, "cache": settings.CACHES["default"]["BACKEND"]}
    services.generation_bump(shop.pk)
    report["cold"] = timed_run(client, requests=VISITORS, key=shop.write_key)
    report["cached"] = timed_run(client, requests=args.requests, key=shop.write_key)
    Shop.objects.filter(pk=shop.pk).delete()
    report["target_p99_ms"] = 10
    print(orjson.dumps(report).decode())


if __name__ == "__main__":
    main()
