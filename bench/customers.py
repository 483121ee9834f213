"""The nightly customer refresh and the customer list at 100,000 customers (issue 20).

    DATABASE_URL=mysql://root@127.0.0.1:3306/clickserver python bench/customers.py

Loads N customers with their orders into a fresh bench shop with a handful of INSERT … SELECT
statements over MariaDB's sequence engine (`seq_1_to_N`), then times:
- `customer_predictions_refresh` (orders read, BG/NBD + Gamma-Gamma fit, predictions, the bulk
  upsert of N rows, the predicted segments), first run (inserts) and second run (updates);
  target <= 2 minutes;
- `GET /segments/customers/` through Django's test client (DRF, the JSON renderer; no HTTP
  server): p50/p95 over `--requests` requests for every sort, its first page and a page a
  tenth of the way down, and an exact-identifier search; target p95 <= 50 ms (first pages).
Prints each figure, then one JSON object on the last line. `--keep` keeps the shop and reuses
it when it holds N customers.
"""

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BENCH_DOMAIN = "bench-customers.example.com"
NOW = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
HISTORY_DAYS = 730
SORTS = ("-revenue", "-orders", "-last_seen", "-predicted_clv", "-churn_risk")


def _sql_load(shop_id: int, customers: int, seed: int) -> int:
    """N persons with 1 to 12 orders each over the two years before NOW.

    Per person: a first order at a uniform instant, a purchase rate (per day) from a gamma-ish
    spread (exp of a normal), 45 % of them with repeat orders spaced by exponential gaps, each
    order's total lognormal (μ 3.8, σ 0.8, by Box-Muller), 3 % partly refunded, 2 % cancelled.
    Ids are explicit (above the tables' current maximum) so orders name their person directly.
    """
    from django.db import connection

    end = NOW.strftime("%Y-%m-%d %H:%M:%S")
    with connection.cursor() as cursor:

        def run(sql: str, *params) -> None:
            cursor.execute(sql, params)

        def base(table: str) -> int:
            cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")
            return int(cursor.fetchone()[0]) + 1

        run("DROP TEMPORARY TABLE IF EXISTS bench_customer")
        run(
            "CREATE TEMPORARY TABLE bench_customer (n INT PRIMARY KEY, first_at DATETIME(6),"
            " orders INT, gap DOUBLE, u1 DOUBLE, u2 DOUBLE)"
        )
        # RAND(seed) seeds the statement's generator once; the other calls continue it.
        run(
            f"INSERT INTO bench_customer SELECT seq, %s - INTERVAL FLOOR(RAND(%s) * {HISTORY_DAYS}"
            " * 86400) SECOND, 1, 10 + RAND() * 120, RAND(), RAND()"
            f" FROM seq_1_to_{customers}",
            end,
            seed,
        )
        # Repeat buyers: as many orders as fit before NOW at their mean gap, capped at 12.
        run(
            "UPDATE bench_customer SET orders = LEAST(12, 1 + FLOOR(TIMESTAMPDIFF(SECOND,"
            " first_at, %s) / 86400 / gap * u2)) WHERE u1 < 0.45",
            end,
        )
        person, order = base("events_person"), base("events_order")
        run(
            "INSERT INTO events_person (id, user_id, first_seen_at, last_seen_at, traits,"
            " created_at, shop_id) SELECT %s + n, CONCAT('c', n), first_at, first_at"
            " + INTERVAL FLOOR(gap * (orders - 1) * 86400) SECOND, '{}', first_at, %s"
            " FROM bench_customer",
            person - 1,
            shop_id,
        )
        total = (
            "ROUND(EXP(3.8 + 0.8 * SQRT(-2 * LN(GREATEST(RAND(), 1e-12))) * COS(2 * PI() * RAND()))"
            ", 2)"
        )
        run(
            "INSERT INTO events_order (id, order_id, anonymous_id, user_id, placed_at, currency,"
            " total, refunded_amount, is_cancelled, country, source, properties, updated_at,"
            " shop_id, person_id) SELECT %s + (s.seq - 1) * %s + n, CONCAT('o', n, '-', s.seq),"
            " '', '', LEAST(first_at + INTERVAL FLOOR(gap * (s.seq - 1 + RAND() * 0.5) * 86400)"
            f" SECOND, %s - INTERVAL 1 SECOND), 'GBP', {total}, 0, RAND() < 0.02, 'GB', 'api',"
            " '{}', first_at, %s, %s + n FROM bench_customer JOIN seq_1_to_12 s"
            " ON s.seq <= bench_customer.orders",
            order - 1,
            customers,
            end,
            shop_id,
            person - 1,
        )
        run(
            "UPDATE events_order SET refunded_amount = ROUND(total / 3, 2)"
            " WHERE shop_id = %s AND MOD(id, 33) = 0",
            shop_id,
        )
        run("DROP TEMPORARY TABLE bench_customer")
        cursor.execute("SELECT COUNT(*) FROM events_order WHERE shop_id = %s", [shop_id])
        return int(cursor.fetchone()[0])


def _shop_drop(shop) -> None:
    """Delete the bench shop's rows table by table: the ORM's cascade collects every row in
    Python first (minutes at 100,000 persons)."""
    from django.db import connection

    statements = (
        "DELETE m FROM segments_segmentmembership m JOIN segments_segment s"
        " ON s.id = m.segment_id WHERE s.shop_id = %s",
        "DELETE FROM segments_customerprediction WHERE shop_id = %s",
        "DELETE FROM events_order WHERE shop_id = %s",
        "DELETE FROM events_person WHERE shop_id = %s",
    )
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql, [shop.pk])
    shop.delete()


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickserver.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
    os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "0")
    # A thousand reads a minute from one user: the read throttle would answer 429.
    os.environ.setdefault("API_RATE_LIMIT_REQUESTS", "1000000000")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.test import APIClient

    from events.models import Person, Shop, ShopMembership
    from segments.models import CustomerModel, CustomerPrediction
    from segments.services.customers import customer_predictions_refresh

    if connection.vendor != "mysql":
        raise SystemExit("needs MariaDB (DATABASE_URL=mysql://…): the loader is MariaDB SQL")
    shop = Shop.objects.filter(domain=BENCH_DOMAIN).first()
    persons = Person.objects.filter(shop=shop).count() if shop else 0
    if shop is not None and not (args.keep and persons == args.customers):
        print("deleting the previous bench shop …", flush=True)
        _shop_drop(shop)
        shop = None
    figures: dict[str, float] = {"customers": args.customers}
    if shop is None:
        shop = Shop.objects.create(domain=BENCH_DOMAIN, name="Bench customers", currency="GBP")
        started = time.perf_counter()
        figures["orders"] = _sql_load(shop.pk, args.customers, args.seed)
        figures["load_s"] = time.perf_counter() - started
        print(f"loaded {args.customers:,} customers, {figures['orders']:,} orders in "
              f"{figures['load_s']:.1f} s", flush=True)  # fmt: skip

    for run in ("first", "second"):
        started = time.perf_counter()
        result = customer_predictions_refresh(shop_id=shop.pk, now=NOW)
        figures[f"refresh_{run}_s"] = time.perf_counter() - started
        print(f"refresh ({run} run): {figures[f'refresh_{run}_s']:.1f} s, {result.customers:,}"
              f" customers, model {result.model} {result.reason}", flush=True)  # fmt: skip
    fit = CustomerModel.objects.get(shop=shop)
    print("fit:", json.dumps(fit.parameters))
    figures["refresh_s"] = max(figures["refresh_first_s"], figures["refresh_second_s"])

    user, _ = get_user_model().objects.get_or_create(username="bench-customers")
    ShopMembership.objects.get_or_create(shop=shop, user=user, defaults={"role": "owner"})
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    client = APIClient()
    client.force_authenticate(user=user)
    some_user = CustomerPrediction.objects.filter(shop=shop).values_list(
        "person__user_id", flat=True
    )[0]
    cases = {f"sort={sort}": {"sort": sort} for sort in SORTS}
    # A page a tenth of the way down (page 100 at 100,000 customers and 100 a page).
    deep = max(1, args.customers // 1000)
    cases |= {f"sort={sort} page {deep}": {"sort": sort, "page": deep} for sort in SORTS}
    cases["search user id"] = {"q": some_user}
    worst_first = 0.0
    for name, params in cases.items():
        times = []
        client.get("/segments/customers/", {"shop": shop.domain, **params})  # warm-up
        for _ in range(args.requests):
            started = time.perf_counter()
            response = client.get("/segments/customers/", {"shop": shop.domain, **params})
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.content[:200]
        p50, p95 = statistics.median(times), _percentile(times, 0.95)
        figures[f"list {name} p50_ms"], figures[f"list {name} p95_ms"] = p50, p95
        if f"page {deep}" not in name:
            worst_first = max(worst_first, p95)
        print(f"GET /segments/customers/ {name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms", flush=True)
    figures["list_worst_first_page_p95_ms"] = worst_first
    if not args.keep:
        _shop_drop(shop)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
