"""The audience breakdown (`analytics/selectors/audience.py`) at 100,000 persons.

    DATABASE_URL=mysql://root@127.0.0.1:3306/clickserver python bench/audience.py

Loads N persons into a fresh bench shop with INSERT … SELECT over MariaDB's sequence engine:
traits 30 % a stated age, 30 % a birth date, 40 % none; first seen up to a year before NOW;
1-6 sessions each over the 90 days before NOW (a quarter converted, each converted session an
order, 3 % of orders with a refund). Then times `audience_get` cold (no cache: the selector
itself, every breakdown) over the last 30 and 90 days, `--repeat` times each, and prints the
median and the worst, then one JSON object on the last line. `--keep` reuses a loaded shop.
"""

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BENCH_DOMAIN = "bench-audience.example.com"
NOW = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)


def _sql_load(shop_id: int, persons: int, seed: int) -> dict[str, int]:
    from django.db import connection

    end = NOW.strftime("%Y-%m-%d %H:%M:%S")
    with connection.cursor() as cursor:

        def run(sql: str, *params) -> None:
            cursor.execute(sql, params)

        def base(table: str) -> int:
            cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")
            return int(cursor.fetchone()[0]) + 1

        def count(table: str) -> int:
            cursor.execute(f"SELECT COUNT(*) FROM {table} WHERE shop_id = %s", [shop_id])
            return int(cursor.fetchone()[0])

        person, session, order = base("events_person"), base("events_session"), base("events_order")
        run("DROP TEMPORARY TABLE IF EXISTS bench_person")
        run(
            "CREATE TEMPORARY TABLE bench_person (n INT PRIMARY KEY, first_at DATETIME(6),"
            " sessions INT, kind DOUBLE, age INT)"
        )
        run(
            "INSERT INTO bench_person SELECT seq, %s - INTERVAL FLOOR(RAND(%s) * 365 * 86400)"
            " SECOND, 1 + FLOOR(RAND() * 6), RAND(), 14 + FLOOR(RAND() * 70)"
            f" FROM seq_1_to_{persons}",
            end,
            seed,
        )
        traits = (
            "CASE WHEN kind < 0.3 THEN JSON_OBJECT('age', age, 'city', 'Leeds')"
            " WHEN kind < 0.6 THEN JSON_OBJECT('birth_date', DATE_FORMAT(%s - INTERVAL age YEAR"
            " - INTERVAL FLOOR(kind * 1000) DAY, '%%Y-%%m-%%d')) ELSE '{}' END"
        )
        run(
            "INSERT INTO events_person (id, user_id, first_seen_at, last_seen_at, traits,"
            f" created_at, shop_id) SELECT %s + n, CONCAT('u', n), first_at, %s, {traits},"
            " first_at, %s FROM bench_person",
            person - 1,
            end,
            end,
            shop_id,
        )
        run(
            "INSERT INTO events_session (id, started_at, ended_at, duration_seconds, event_count,"
            " pageview_count, entry_url, exit_url, referrer, utm_source, utm_medium, utm_campaign,"
            " device, browser, os, country, is_converted, revenue, is_bounce, shop_id, person_id)"
            " SELECT %s + (s.seq - 1) * %s + n, t, t, 60, 3, 2, '/', '/', '', '', '', '',"
            " 'mobile', '', '', 'GB', RAND() < 0.25, 0, 0, %s, %s + n FROM ("
            "  SELECT n, s1.seq, %s - INTERVAL FLOOR(RAND() * 90 * 86400) SECOND AS t"
            "  FROM bench_person JOIN seq_1_to_6 s1 ON s1.seq <= bench_person.sessions) s",
            session - 1,
            persons,
            shop_id,
            person - 1,
            end,
        )
        run(
            "INSERT INTO events_order (id, order_id, anonymous_id, user_id, placed_at, currency,"
            " total, refunded_amount, is_cancelled, country, source, properties, updated_at,"
            " shop_id, person_id) SELECT %s + id, CONCAT('o', id), '', '', started_at, 'GBP',"
            " ROUND(10 + RAND() * 190, 2), 0, RAND() < 0.02, 'GB', 'api', '{}', started_at, %s,"
            " person_id FROM events_session WHERE shop_id = %s AND is_converted",
            order - session,
            shop_id,
            shop_id,
        )
        run(
            "INSERT INTO events_refund (refund_id, source_order_id, amount, refunded_at, shop_id,"
            " order_id) SELECT CONCAT('r', id), order_id, ROUND(total / 3, 2),"
            " LEAST(placed_at + INTERVAL 3 DAY, %s), %s, id FROM events_order"
            " WHERE shop_id = %s AND MOD(id, 33) = 0",
            end,
            shop_id,
            shop_id,
        )
        run("DROP TEMPORARY TABLE bench_person")
        return {
            "persons": count("events_person"),
            "sessions": count("events_session"),
            "orders": count("events_order"),
            "refunds": count("events_refund"),
        }


def _shop_drop(shop) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        for table in ("events_refund", "events_order", "events_session", "events_person"):
            cursor.execute(f"DELETE FROM {table} WHERE shop_id = %s", [shop.pk])
    shop.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickserver.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
    import django

    django.setup()
    from django.db import connection

    from analytics.periods import Period
    from analytics.selectors.audience import AUDIENCE_BREAKDOWNS, audience_get
    from analytics.selectors.query import Query
    from events.models import Person, Shop

    if connection.vendor != "mysql":
        raise SystemExit("needs MariaDB (DATABASE_URL=mysql://…): the loader is MariaDB SQL")
    shop = Shop.objects.filter(domain=BENCH_DOMAIN).first()
    loaded = Person.objects.filter(shop=shop).count() if shop else 0
    if shop is not None and not (args.keep and loaded == args.persons):
        print("deleting the previous bench shop …", flush=True)
        _shop_drop(shop)
        shop = None
    figures: dict[str, float] = {}
    if shop is None:
        shop = Shop.objects.create(domain=BENCH_DOMAIN, name="Bench audience", currency="GBP")
        started = time.perf_counter()
        figures |= _sql_load(shop.pk, args.persons, args.seed)
        figures["load_s"] = time.perf_counter() - started
        print(f"loaded {figures} in {figures['load_s']:.1f} s", flush=True)

    tz = shop.timezone
    last = NOW.date() - timedelta(days=1)
    for days in (30, 90):
        period = Period(first=last - timedelta(days=days - 1), last=last, tz=ZoneInfo(tz))
        for breakdown in AUDIENCE_BREAKDOWNS:
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                answer = audience_get(query=Query(shop=shop, period=period), breakdown=breakdown)
                times.append(time.perf_counter() - started)
            sessions = sum(row.sessions for row in answer.rows)
            key = f"{breakdown}_{days}d"
            figures[f"{key}_median_ms"] = statistics.median(times) * 1000
            figures[f"{key}_max_ms"] = max(times) * 1000
            figures[f"{key}_sessions"] = sessions
            print(f"{key}: {sessions:,} sessions, median {figures[f'{key}_median_ms']:.0f} ms,"
                  f" worst {figures[f'{key}_max_ms']:.0f} ms", flush=True)  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
