"""Pipeline throughput and lag: events/s through sessions and identity, then a live worker's lag.

    DATABASE_URL=mysql://root@127.0.0.1:3306/clickserver python bench/pipeline.py --events 200000

1. Throughput: insert N events through the fast path, time `events_process` catching up in this
   process. Traffic looks like a live shop's: events arrive in time order, interleaved across
   visitors, so every batch touches thousands of people and extends their open sessions; a tenth
   of the visitors sign in part-way (identity merges) and about one session in fifty ends in a
   purchase.
2. Ceiling, same run: the raw rate of the one statement every new event costs, the temporary
   table `UPDATE … JOIN` that writes `session_id`/`person_id`, on the events just processed
   (reset to NULL, then written back), and the ratio of the pipeline to it; and the same
   statement onto rows that already hold ids (in place), which shows what the NULL → id row
   growth costs.
3. Lag: a real Celery worker on RabbitMQ (started here, stopped at the end) while this process
   inserts `--lag-rate` events/s for `--lag-seconds` through `events_insert` +
   `events_process_schedule`, as the ingest API does; every 0.5 s the lag (now − oldest
   unprocessed `received_at`, as `/health/ready/` reports it) is sampled. Includes the
   `PIPELINE_SETTLE_SECONDS` wait and the one-second scheduling debounce.

Prints one JSON object.
"""

import argparse
import os
import random
import signal
import statistics
import subprocess
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
os.environ.setdefault("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
# A queue of its own, so the worker started here is the only one that takes these tasks.
os.environ.setdefault("CELERY_DEFAULT_QUEUE", "bench-pipeline")
django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from bench.buffer_pool import buffer_pool_apply, buffer_pool_option  # noqa: E402
from events import selectors  # noqa: E402
from events.models import Event, Person, Session  # noqa: E402
from events.services.ingest import events_insert, events_process_schedule  # noqa: E402
from events.services.pipeline import events_process  # noqa: E402
from events.services.shops import shop_create  # noqa: E402
from events.sql import events_assign  # noqa: E402
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


def raw_assign_rate(*, shop_id: int, rows: int) -> dict:
    """Rows/s of the assignment UPDATE alone, on this shop's processed events (restored)."""
    assigned = list(
        Event.objects.filter(shop_id=shop_id, session__isnull=False)
        .order_by("id")
        .values_list("id", "session_id", "person_id")[:rows]
    )
    if not assigned:
        return {"rows": 0, "rows_per_s": 0}
    first, last = assigned[0][0], assigned[-1][0]
    with transaction.atomic():
        Event.objects.filter(shop_id=shop_id, id__gte=first, id__lte=last).update(
            session=None, person=None
        )
    started = time.perf_counter()
    with transaction.atomic():
        events_assign(assigned)
    seconds = time.perf_counter() - started
    # The same statement onto rows that already hold ids (each row gets its neighbour's pair,
    # then its own back): an in-place update. NULL → id makes InnoDB rewrite every row, which
    # grows by the two 8-byte ids, and that is what the pipeline pays for each new event.
    rotated = [(row[0], *assigned[index - 1][1:]) for index, row in enumerate(assigned)]
    started = time.perf_counter()
    with transaction.atomic():
        events_assign(rotated)
        events_assign(assigned)
    in_place_seconds = (time.perf_counter() - started) / 2
    return {
        "rows": len(assigned),
        "seconds": round(seconds, 2),
        "rows_per_s": round(len(assigned) / seconds),
        "in_place_rows_per_s": round(len(assigned) / in_place_seconds),
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def wait_caught_up(shop_id: int, *, timeout: float) -> float:
    """Seconds until the shop has no backlog (or `timeout`)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if not selectors.shop_backlog(shop_id=shop_id).events:
            break
        time.sleep(0.2)
    return time.perf_counter() - started


def worker_stop(worker: subprocess.Popen) -> None:
    """Warm shutdown, then a kill: a worker still inside a long task (a rollup refresh after a
    big backlog) does not get to finish it."""
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


# Long on purpose: the worker, the sender and the sampler share one timeline; keeping them in
# one function keeps their start, stop and clean-up in one place.
def lag_at_steady_rate(*, rate: int, seconds: float, persons: int, seed: int) -> dict:
    """Lag of a real worker while events arrive at `rate` per second."""
    shop = shop_create(
        domain=f"bench-lag-{uuid.uuid4().hex[:8]}.example", owner_username="bench"
    ).shop
    events = generate(int(rate * seconds) + 1, persons=persons, seed=seed + 1)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "clickserver",
            "worker",
            "--concurrency",
            "2",
            "--queues",
            f"{settings.CELERY_TASK_DEFAULT_QUEUE},{settings.CELERY_LIVE_QUEUE}",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
        # Its own process group, so the pool's children are stopped with it (they hold our
        # stderr: left running, they would keep bench/run.py waiting for its end).
        start_new_session=True,
    )
    try:
        # Warm-up: the worker is ready once it has processed one event.
        events_insert(shop_id=shop.pk, events=events[:1], received_at=datetime.now(UTC))
        events_process_schedule(shop_id=shop.pk)
        ready = time.perf_counter()
        while selectors.shop_backlog(shop_id=shop.pk).events:
            if time.perf_counter() - ready > 120:
                raise SystemExit("bench: the Celery worker processed nothing in 120 s")
            time.sleep(0.5)
            events_process_schedule(shop_id=shop.pk)
        samples: list[float] = []
        tick = 0.1
        per_tick = max(int(rate * tick), 1)
        position = 1
        started = time.perf_counter()
        next_sample = started
        while (elapsed := time.perf_counter() - started) < seconds and position < len(events):
            due = min(int(elapsed * rate) + per_tick, len(events))
            if due > position:
                events_insert(
                    shop_id=shop.pk, events=events[position:due], received_at=datetime.now(UTC)
                )
                events_process_schedule(shop_id=shop.pk)
                position = due
            if time.perf_counter() >= next_sample:
                oldest = selectors.shop_backlog(shop_id=shop.pk).oldest_unprocessed_at
                samples.append((datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0)
                next_sample += 0.5
            time.sleep(max(0.0, tick - (time.perf_counter() - started - elapsed)))
        inserted_seconds = time.perf_counter() - started
        # The sweep on beat is not running here: keep scheduling until the worker has drained.
        drain_started = time.perf_counter()
        while selectors.shop_backlog(shop_id=shop.pk).events:
            if time.perf_counter() - drain_started > 300:
                break
            events_process_schedule(shop_id=shop.pk)
            time.sleep(0.5)
        drain = time.perf_counter() - drain_started
    finally:
        worker_stop(worker)
    result = {
        "rate_target": rate,
        "rate_achieved": round(position / inserted_seconds),
        "events": position,
        "seconds": round(inserted_seconds, 1),
        "samples": len(samples),
        "p50_s": round(statistics.median(samples), 2) if samples else None,
        "p95_s": round(percentile(samples, 0.95), 2) if samples else None,
        "max_s": round(max(samples), 2) if samples else None,
        "drain_s": round(drain, 1),
        "settle_s": settings.PIPELINE_SETTLE_SECONDS,
        "broker": settings.CELERY_BROKER_URL.split("://", 1)[0],
    }
    shop.delete()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--persons", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=settings.PIPELINE_BATCH_SIZE)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--raw-rows", type=int, default=20_000)
    parser.add_argument("--lag-rate", type=int, default=2000, help="events/s; 0 skips the lag run")
    parser.add_argument("--lag-seconds", type=float, default=20)
    buffer_pool_option(parser)
    args = parser.parse_args()

    buffer_pool_apply(args.buffer_pool_mib)

    load_before = os.getloadavg()[0]
    domain = f"bench-{uuid.uuid4().hex[:8]}.example"
    shop = shop_create(domain=domain, owner_username="bench").shop
    events = generate(args.events, persons=args.persons, seed=args.seed)
    received_at = datetime.now(UTC) - timedelta(hours=1)
    for start in range(0, len(events), 2000):
        events_insert(shop_id=shop.pk, events=events[start : start + 2000], received_at=received_at)

    now = datetime.now(UTC)
    started = time.perf_counter()
    processed = 0
    while True:
        result = events_process(shop_id=shop.pk, now=now, batch_size=args.batch_size)
        processed += result.processed
        if not result.has_more:
            break
    seconds = time.perf_counter() - started
    events_per_s = round(processed / seconds)
    raw = raw_assign_rate(shop_id=shop.pk, rows=min(args.raw_rows, processed))
    output = {
        "events": processed,
        "persons": Person.objects.filter(shop=shop).count(),
        "sessions": Session.objects.filter(shop=shop).count(),
        "batch_size": args.batch_size,
        "database": connection.vendor,
        "seconds": round(seconds, 2),
        "events_per_s": events_per_s,
        "raw_assign": raw,
        "ratio_to_raw_assign": round(events_per_s / raw["rows_per_s"], 3)
        if raw["rows_per_s"]
        else None,
        "buffer_pool_mib": args.buffer_pool_mib,
        "load_average_before": round(load_before, 2),
    }
    shop.delete()
    if args.lag_rate:
        output["lag"] = lag_at_steady_rate(
            rate=args.lag_rate, seconds=args.lag_seconds, persons=args.persons, seed=args.seed
        )
    output["load_average_after"] = round(os.getloadavg()[0], 2)
    print(orjson.dumps(output).decode())


if __name__ == "__main__":
    main()
