"""Dashboard query latency: bulk-load N events with their sessions, build rollups, time endpoints.

    DATABASE_URL=mysql://root@127.0.0.1:3306/clickserver REDIS_URL=redis://127.0.0.1:6379/1 \
        python bench/queries.py --events 1000000

Events, persons, sessions and orders are written with multi-row INSERTs already assigned to
their sessions (as the pipeline leaves them), spread over --days days. Then `rollups_rebuild` is
timed, and each dashboard endpoint is requested over the last 30 days: cold (the cache generation
is bumped before every request, so the answer comes from the rollups) and warm (from the cache).
A 30-day 3-step session funnel reads the raw events of the period. Prints JSON with p50/p95 ms.
"""

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import django
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickserver.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "0")  # the test client speaks plain HTTP
# The bench times the endpoints, not the API rate limit (600 requests a minute per token).
os.environ.setdefault("API_RATE_LIMIT_REQUESTS", "1000000000")
django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from analytics.cache import rollups_generation_bump  # noqa: E402
from analytics.services.rollups import rollups_rebuild  # noqa: E402
from bench.buffer_pool import buffer_pool_apply, buffer_pool_option  # noqa: E402
from events.models import Event, Order, Person, Session, Shop, ShopMembership  # noqa: E402

DOMAIN = "bench-queries.example.com"
END = datetime(2026, 3, 1, tzinfo=UTC)
SOURCES = np.array(["", "google", "facebook", "newsletter", "instagram"])
DEVICES = np.array(["desktop", "mobile", "tablet"])
COUNTRIES = np.array(["US", "GB", "DE", "FR", "NL", "ES"])
ENDPOINTS = [
    "session_count",
    "user_count",
    "visit_conversion",
    "product_visits",
    "kpis",
    "trends",
    "products",
    "abandoned_carts",
    "geography",
    "retention",
    "insights",
]
CHUNK = 50_000
# mysqlclient's executemany folds rows into multi-row INSERTs of at most this many bytes (64 KiB by
# default); 8 MiB statements (under MariaDB's 16 MiB max_allowed_packet) load 10 M events in bulk.
STATEMENT_BYTES = 8 * 1024 * 1024


def insert(table: str, columns: list[str], rows: list[tuple]) -> None:
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    with connection.cursor() as cursor:
        raw = cursor.cursor
        while hasattr(raw, "cursor"):
            raw = raw.cursor
        if hasattr(raw, "max_stmt_length"):
            raw.max_stmt_length = STATEMENT_BYTES
        for i in range(0, len(rows), CHUNK):
            cursor.executemany(sql, rows[i : i + CHUNK])


def reset_shop() -> Shop:
    shop = Shop.objects.filter(domain=DOMAIN).first()
    if shop is not None:
        with connection.cursor() as cursor:
            for model in (Event, Order, Session, Person):
                cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE shop_id = %s", [shop.pk])
        shop.delete()
    return Shop.objects.create(domain=DOMAIN, name="bench")


# Long on purpose: events, sessions, persons and orders are generated from the same random
# draws so that their ids and times agree; split, the arrays would travel between functions.
def generate(shop: Shop, *, events: int, days: int, seed: int) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    start = END - timedelta(days=days)
    sessions = max(events // 8, 1)
    persons = max(sessions // 3, 1)
    now = datetime.now(UTC)
    person_base = (Person.objects.order_by("-id").values_list("id", flat=True).first() or 0) + 1
    person_ids = np.arange(person_base, person_base + persons)
    insert(
        Person._meta.db_table,
        ["id", "shop_id", "user_id", "first_seen_at", "last_seen_at", "traits", "created_at"],
        [
            (int(pid), shop.pk, f"u{pid}" if pid % 4 == 0 else "", start, END, "{}", now)
            for pid in person_ids
        ],
    )
    session_base = (Session.objects.order_by("-id").values_list("id", flat=True).first() or 0) + 1
    session_ids = np.arange(session_base, session_base + sessions)
    session_person = rng.choice(person_ids, sessions)
    # Busier evenings and weekdays, so the heat map has a shape.
    session_start = rng.uniform(0, days * 86400, sessions)
    session_start = np.sort(session_start)
    lengths = rng.poisson(7, sessions) + 1
    lengths = np.minimum(lengths, max(events // sessions * 4, 1))
    scale = events / lengths.sum()
    lengths = np.maximum((lengths * scale).astype(int), 1)
    sources = rng.choice(SOURCES, sessions)
    devices = rng.choice(DEVICES, sessions)
    countries = rng.choice(COUNTRIES, sessions)
    converted = rng.random(sessions) < 0.03
    session_rows = []
    for i in range(sessions):
        began = start + timedelta(seconds=float(session_start[i]))
        ended = began + timedelta(seconds=int(lengths[i]) * 30)
        session_rows.append(
            (int(session_ids[i]), shop.pk, int(session_person[i]), began, ended,
             int(lengths[i]) * 30, int(lengths[i]), 0, "", "", "", str(sources[i]), "", "",
             str(devices[i]), "", "", str(countries[i]), bool(converted[i]), 0,
             bool(lengths[i] == 1))
        )  # fmt: skip
    insert(
        Session._meta.db_table,
        ["id", "shop_id", "person_id", "started_at", "ended_at", "duration_seconds",
         "event_count", "pageview_count", "entry_url", "exit_url", "referrer", "utm_source",
         "utm_medium", "utm_campaign", "device", "browser", "os", "country", "is_converted",
         "revenue", "is_bounce"],
        session_rows,
    )  # fmt: skip
    products = rng.integers(1, 2000, events)
    kinds = rng.choice(
        np.array(["page_view", "product_view", "add_to_cart", "checkout_started"]),
        events,
        p=[0.45, 0.45, 0.07, 0.03],
    )
    event_rows = []
    order_rows = []
    n = 0
    columns = ["shop_id", "event_id", "type", "anonymous_id", "user_id", "occurred_at",
               "received_at", "url", "referrer", "title", "product_id", "product_name",
               "product_category", "product_price", "product_quantity", "order_id", "revenue",
               "currency", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
               "user_agent", "ip", "country", "properties", "session_id", "person_id"]  # fmt: skip
    for i in range(sessions):
        began = start + timedelta(seconds=float(session_start[i]))
        for k in range(int(lengths[i])):
            if n >= events:
                break
            kind = str(kinds[n])
            if converted[i] and k == int(lengths[i]) - 1:
                kind = "purchase"
                order_rows.append(
                    (shop.pk, f"bo-{i}", int(session_person[i]), "", "", began, "USD", 80, 0,
                     False, None, str(countries[i]), "api", "{}", now)
                )  # fmt: skip
            at = began + timedelta(seconds=30 * k)
            product = f"p{products[n]}" if kind != "page_view" else ""
            event_rows.append(
                (shop.pk, f"b-{n}", kind, f"a{session_person[i]}", "", at, at, "", "", "",
                 product, product, "", 20 if product else None, 1 if product else None,
                 f"bo-{i}" if kind == "purchase" else "", None, "", str(sources[i]), "", "", "",
                 "", "", None, str(countries[i]), "{}", int(session_ids[i]),
                 int(session_person[i]))
            )  # fmt: skip
            n += 1
            if len(event_rows) >= CHUNK:
                insert(Event._meta.db_table, columns, event_rows)
                event_rows = []
    insert(Event._meta.db_table, columns, event_rows)
    insert(
        Order._meta.db_table,
        ["shop_id", "order_id", "person_id", "anonymous_id", "user_id", "placed_at", "currency",
         "total", "refunded_amount", "is_cancelled", "cancelled_at", "country", "source",
         "properties", "updated_at"],
        order_rows,
    )  # fmt: skip
    return {"events": n, "sessions": sessions, "persons": persons, "orders": len(order_rows)}


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered), 2), "p95_ms": round(p95, 2)}


def timed(client: APIClient, path: str, before=None) -> float:
    if before:
        before()
    started = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{path}: {response.status_code} {response.content[:300]!r}")
    return elapsed


# Long on purpose: the run reads top to bottom as the procedure it measures (load, rebuild,
# cold and warm samples, funnel), each step timed.
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="reuse the data a previous run loaded when it has --events events (skips the load)",
    )
    parser.add_argument(
        "--no-rebuild",
        action="store_true",
        help="with --keep: time the endpoints on the rollups already built (rebuild figure 0)",
    )
    buffer_pool_option(parser)
    args = parser.parse_args()

    buffer_pool_apply(args.buffer_pool_mib)
    started = time.monotonic()
    shop = Shop.objects.filter(domain=DOMAIN).first()
    if args.keep and shop and Event.objects.filter(shop=shop).count() >= args.events * 0.99:
        counts = {
            "events": Event.objects.filter(shop=shop).count(),
            "sessions": Session.objects.filter(shop=shop).count(),
            "persons": Person.objects.filter(shop=shop).count(),
            "orders": Order.objects.filter(shop=shop).count(),
        }
    else:
        with transaction.atomic():
            shop = reset_shop()
            counts = generate(shop, events=args.events, days=args.days, seed=args.seed)
    load_seconds = time.monotonic() - started
    print(f"loaded {counts} in {load_seconds:.1f}s", file=sys.stderr)

    started = time.monotonic()
    if not (args.keep and args.no_rebuild):
        rollups_rebuild(shop_id=shop.pk, now=datetime.now(UTC))
    rebuild_seconds = time.monotonic() - started
    print(f"rollups rebuilt in {rebuild_seconds:.1f}s", file=sys.stderr)

    # Requests go through the test client in this process (no network in the figures).
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    user, _ = get_user_model().objects.get_or_create(username="bench-queries")
    ShopMembership.objects.get_or_create(shop=shop, user=user)
    client = APIClient()
    client.force_authenticate(user=user)
    period = f"shop={DOMAIN}&start={(END - timedelta(days=30)).date()}&end={END.date()}"
    cold_first = lambda: rollups_generation_bump(shop_id=shop.pk)  # noqa: E731
    report: dict = {
        "counts": counts,
        "load_s": round(load_seconds, 1),
        "buffer_pool_mib": args.buffer_pool_mib,
    }
    report["rollups_rebuild_s"] = round(rebuild_seconds, 1)
    report["endpoints"] = {}
    for name in ENDPOINTS:
        path = f"/analytics/{name}/?{period}"
        # One untimed request first: the process's first call of a view imports and compiles its
        # code paths (a one-off the figures should not carry; with 10 samples p95 is the max).
        timed(client, path, cold_first)
        cold = [timed(client, path, cold_first) for _ in range(args.repeat)]
        warm = [timed(client, path) for _ in range(args.repeat * 2)]
        report["endpoints"][name] = {"cold": percentiles(cold), "warm": percentiles(warm)}
        print(name, report["endpoints"][name], file=sys.stderr)
    funnel = f"/analytics/funnel/?{period}&steps=product_view,add_to_cart,purchase"
    timed(client, funnel, cold_first)
    report["funnel_30d_3_steps"] = percentiles(
        [timed(client, funnel, cold_first) for _ in range(args.repeat)]
    )
    # The figures bench/run.py tracks: the worst endpoint against each target.
    endpoints = report["endpoints"].values()
    report["summary"] = {
        "worst_cold_p95_ms": max(e["cold"]["p95_ms"] for e in endpoints),
        "worst_warm_p95_ms": max(e["warm"]["p95_ms"] for e in endpoints),
        "funnel_30d_p95_ms": report["funnel_30d_3_steps"]["p95_ms"],
        "rollups_rebuild_s": report["rollups_rebuild_s"],
    }
    # One line: bench/run.py reads the last line of stdout as the result.
    print(orjson.dumps(report).decode())


if __name__ == "__main__":
    main()
