"""Anomaly detection in the product (issue 19): detection time for a shop with 10 M events, and
the spike-to-alert latency through the real pipeline and a real Celery worker.

    python bench/anomaly_alerts.py [--events 10000000] [--no-latency]

1. **Detection time.** Detection reads rollups, not the raw log, so the 10 M-event shop is
   synthesised where detection reads it: a year of hourly rollup rows (a totals row and 20
   source/device/country rows per hour, events shaped by the hour of day with ±10 % noise,
   summing to `--events`), the daily rows folded from them by SQL, hourly revenue, and 60,000
   orders (2 % of 3 M sessions), all written by `INSERT … SELECT` over MariaDB's sequence engine
   (`seq_0_to_N`). Then `anomalies_detect` runs: first with a new detection watermark (it judges
   the last 7 days of orders), then three times in steady state (median reported).
2. **Spike to alert**, on a second shop of the demo's size (80,000 events a year in rollups,
   about 3 sessions an hour, history up to the hour before the spike). A Celery worker (2
   processes, its own queue) and a webhook receiver (an HTTP server in a thread that verifies
   the signature) are started; the demo's "Generate anomalies" journeys (`Simulator.anomalies`:
   300 one-page visits over the last hour, a $9,850 order, a bot) are stored with
   `events_ingest`, as the dashboard button does. From there everything is the product's own
   path with its default timings: the on-commit pipeline task (1 s debounce + 2 s settle), the
   rollup follow-up, detection scheduled by the refresh (10 s debounce), dispatch and the
   delivery task. The clock runs from the ingest call to the receiver's verified request for
   each anomaly. Beat is not started: its 60 s sweep is the safety net, not this path.

Needs MariaDB (DATABASE_URL, default the cs_alerts database), Redis and RabbitMQ. The bench
shop (`bench-alerts.example`) is deleted first. Prints the figures, then one JSON line.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUEUE = "bench-alerts"
ENV = {
    "DATABASE_URL": os.environ.get("DATABASE_URL", "mysql://root@127.0.0.1:3306/cs_alerts"),
    "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/9"),
    "CELERY_BROKER_URL": os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    "CELERY_DEFAULT_QUEUE": QUEUE,
    "CACHE_KEY_PREFIX": QUEUE,
    "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "bench"),
    "CELERY_TASK_ALWAYS_EAGER": "0",
    # The receiver is a thread on 127.0.0.1 (clickserver/webhook_guard.py).
    "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "1",
}
os.environ.update(ENV)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickserver.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from analytics.alerting import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_verify  # noqa: E402
from analytics.models import AlertDelivery, Anomaly, DetectionState  # noqa: E402
from analytics.periods import hour_floor  # noqa: E402
from analytics.services.alerts import alert_rule_create  # noqa: E402
from analytics.services.detection import anomalies_detect  # noqa: E402
from events.models import PipelineJob, PipelineWatermark, Shop  # noqa: E402
from events.services.ingest import events_ingest  # noqa: E402
from events.simulator import Simulator  # noqa: E402

DOMAIN = "bench-alerts.example"
DEMO_DOMAIN = "bench-alerts-demo.example"
# The latency shop: the demo's size (`make demo`: 6,000 visitors over 60 days).
DEMO_EVENTS = 80_000
DEMO_ORDERS = 600
HOUR = timedelta(hours=1)
DIMENSIONS = 20
HOURS = 365 * 24
ORDERS = 60_000
EVENTS_PER_SESSION = 3.3
COUNT_COLUMNS = (
    "session_count, converted_session_count, bounce_count, cart_session_count, "
    "abandoned_session_count, abandoned_value, pageview_count, product_view_count, "
    "add_to_cart_count, checkout_count, purchase_count"
)


def history_write(shop: Shop, *, events: int, end: datetime, orders: int = ORDERS) -> int:
    """A year of rollups summing to about `events` events, ending at the hour `end`."""
    start = (end - timedelta(hours=HOURS)).replace(tzinfo=None)
    mean = events / HOURS
    # Events of an hour: the day's shape (peak at 15:00, trough at 03:00) with ±10 % noise.
    shaped = (
        f"GREATEST(0, ROUND({mean} * (1 + 0.6 * SIN(2 * PI() * "
        "(CAST(MOD(h.seq, 24) AS SIGNED) - 9) / 24)) * (0.9 + 0.2 * RAND(h.seq))))"
    )
    counts = (
        "ROUND(ev / {per} / {n}), ROUND(ev / {per} / {n} * 0.02), ROUND(ev / {per} / {n} * 0.4), "
        "ROUND(ev / {per} / {n} * 0.08), ROUND(ev / {per} / {n} * 0.06), 0, "
        "ROUND(ev * 0.6 / {n}), ROUND(ev * 0.3 / {n}), ROUND(ev * 0.06 / {n}), "
        "ROUND(ev * 0.03 / {n}), ROUND(ev * 0.01 / {n})"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO analytics_hourlyrollup (shop_id, is_total, hour, utm_source, device, "
            f"country, {COUNT_COLUMNS}) SELECT %s, 1, %s + INTERVAL h.seq HOUR, '', '', '', "
            f"{counts.format(per=EVENTS_PER_SESSION, n=1)} "
            f"FROM (SELECT seq, {shaped} AS ev FROM seq_0_to_{HOURS - 1} h) h",
            [shop.pk, start],
        )
        cursor.execute(
            f"INSERT INTO analytics_hourlyrollup (shop_id, is_total, hour, utm_source, device, "
            f"country, {COUNT_COLUMNS}) SELECT %s, 0, t.hour, CONCAT('source-', d.seq), "
            f"IF(MOD(d.seq, 2), 'mobile', 'desktop'), 'GB', "
            + counts.replace("ev", "t.pageview_count / 0.6").format(
                per=EVENTS_PER_SESSION, n=DIMENSIONS
            )
            + f" FROM analytics_hourlyrollup t JOIN seq_0_to_{DIMENSIONS - 1} d "
            "WHERE t.shop_id = %s AND t.is_total",
            [shop.pk, shop.pk],
        )
        sums = ", ".join(f"SUM({c.strip()})" for c in COUNT_COLUMNS.split(","))
        cursor.execute(
            f"INSERT INTO analytics_dailyrollup (shop_id, is_total, day, utm_source, device, "
            f"country, {COUNT_COLUMNS}) SELECT shop_id, is_total, DATE(hour), utm_source, device, "
            f"country, {sums} FROM analytics_hourlyrollup WHERE shop_id = %s "
            "GROUP BY is_total, DATE(hour), utm_source, device, country",
            [shop.pk],
        )
        cursor.execute(
            "INSERT INTO analytics_hourlyrevenue (shop_id, hour, order_count, order_total, "
            "refund_count, refund_total) SELECT shop_id, hour, converted_session_count, "
            "converted_session_count * 62.5, 0, 0 FROM analytics_hourlyrollup "
            "WHERE shop_id = %s AND is_total",
            [shop.pk],
        )
        # Order values lognormal-ish (median about $50, a long right tail).
        cursor.execute(
            "INSERT INTO events_order (shop_id, order_id, anonymous_id, user_id, placed_at, "
            "currency, total, refunded_amount, is_cancelled, country, source, properties, "
            "updated_at) SELECT %s, CONCAT('o-', seq), '', '', "
            f"%s + INTERVAL FLOOR(RAND(seq) * {HOURS * 3600}) SECOND, 'USD', "
            "ROUND(EXP(3.9 + 0.7 * (RAND(seq + 7) + RAND(seq + 11) + RAND(seq + 13) - 1.5)"
            " * 2), 2), 0, 0, 'GB', 'api', '{}', %s "
            f"FROM seq_1_to_{orders}",
            [shop.pk, start, end.replace(tzinfo=None)],
        )
        cursor.execute(
            "SELECT SUM(pageview_count + product_view_count + add_to_cart_count + "
            "checkout_count + purchase_count) FROM analytics_hourlyrollup "
            "WHERE shop_id = %s AND is_total",
            [shop.pk],
        )
        total = int(cursor.fetchone()[0])
    # The rollups already count these orders: refreshes must not recompute their days.
    PipelineWatermark.objects.update_or_create(
        job=PipelineJob.ANALYTICS_ORDERS,
        shop=shop,
        defaults={"position": int(time.time() * 1e6) + 10**6},
    )
    return total


def detection_time(shop: Shop, *, now: datetime) -> dict[str, float]:
    DetectionState.objects.filter(shop=shop).delete()
    started = time.perf_counter()
    first = anomalies_detect(shop_id=shop.pk, now=now)
    cold = time.perf_counter() - started
    steady = []
    for minute in range(1, 4):
        started = time.perf_counter()
        anomalies_detect(shop_id=shop.pk, now=now + timedelta(minutes=minute))
        steady.append(time.perf_counter() - started)
    return {
        "first_run_s": cold,
        "first_run_orders_judged": first.orders_judged,
        "first_run_opened": len(first.opened),
        "steady_median_s": statistics.median(steady),
        "steady_max_s": max(steady),
    }


class Receiver:
    def __init__(self, secret: str = "") -> None:
        self.secret = secret
        self.arrivals: list[tuple[float, dict, bool]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                verified = signature_verify(
                    secret=receiver.secret,
                    timestamp=self.headers[TIMESTAMP_HEADER],
                    signature=self.headers[SIGNATURE_HEADER],
                    body=body,
                    now=time.time(),
                )
                receiver.arrivals.append(
                    (time.monotonic(), json.loads(body)["clickserver"], verified)
                )
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def first_arrival(receiver: Receiver, match) -> float | None:
    times = [at for at, body, verified in receiver.arrivals if verified and match(body)]
    return min(times) if times else None


def spike_to_alert(shop: Shop, *, timeout: float) -> dict[str, float | None]:
    receiver = Receiver()
    rule = alert_rule_create(
        shop=shop,
        data={
            "name": "bench",
            "channel": "webhook",
            "webhook_url": receiver.url,
            "metrics": ["sessions_hourly", "order_value", "bot"],
            "cooldown_minutes": 0,
        },
    )
    receiver.secret = rule.secret
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "clickserver", "worker", "--concurrency", "2",
         "--queues", f"{QUEUE},{QUEUE}.live", "--loglevel", "WARNING", "--without-gossip",
         "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(8)  # the worker's start-up, before the clock starts
        now = timezone.now()
        journeys = Simulator(shop_domain=shop.domain, seed=3, timezone="UTC").anomalies(end=now)
        events = [event for journey in journeys for event in journey]
        started = time.monotonic()
        for index in range(0, len(events), 500):
            events_ingest(
                shop=shop, events=events[index : index + 500], received_at=now, sent_at=now
            )
        wanted = {
            "spike": lambda b: b["metric"] == "sessions_hourly" and b["direction"] == "spike",
            "whale": lambda b: b["metric"] == "order_value",
            "bot": lambda b: b["metric"] == "bot",
        }
        while time.monotonic() - started < timeout:
            if all(first_arrival(receiver, match) for match in wanted.values()):
                break
            time.sleep(0.2)
        result: dict[str, float | None] = {}
        for name, match in wanted.items():
            at = first_arrival(receiver, match)
            result[f"{name}_to_webhook_s"] = None if at is None else at - started
        time.sleep(1)
        sent = AlertDelivery.objects.filter(shop=shop, status="sent")
        result["deliveries_sent"] = sent.count()
        result["signatures_verified"] = all(verified for _, _, verified in receiver.arrivals)
        result["events_injected"] = len(events)
        # The spike's hours as stored, and what each delivery said (a window first judged on
        # part of the events can be a drop, then a spike: both are sent).
        result["spike_hours"] = [
            {
                "window_start": row.window_start.isoformat(),
                "direction": row.direction,
                "sent": sorted(row.deliveries.values_list("direction", flat=True)),
            }
            for row in Anomaly.objects.filter(
                shop=shop, metric="sessions_hourly", window_start__gte=hour_floor(now) - 2 * HOUR
            ).order_by("window_start")
        ]
        return result
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        receiver.server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    Shop.objects.filter(domain=DOMAIN).delete()
    shop = Shop.objects.create(domain=DOMAIN, name="Bench alerts", currency="USD")
    now = timezone.now()
    started = time.perf_counter()
    total = history_write(shop, events=args.events, end=hour_floor(now) - timedelta(hours=2))
    load_s = time.perf_counter() - started
    print(f"history: {total:,} events in rollups over a year, written in {load_s:.1f} s")
    figures = {"events_in_rollups": total, "history_load_s": load_s}
    figures.update(detection_time(shop, now=now))
    print(
        f"detection: first run {figures['first_run_s']:.2f} s "
        f"({figures['first_run_orders_judged']} orders judged), steady state median "
        f"{figures['steady_median_s']:.2f} s (max {figures['steady_max_s']:.2f} s)"
    )
    Shop.objects.filter(domain=DOMAIN).delete()
    if not args.no_latency:
        # The demo's spike is 300 visits in an hour: a spike for a shop of the demo's size
        # (about 3 sessions an hour), not for the 10 M-event one (about 300 an hour). History up
        # to the hour before the spike's first hour.
        Shop.objects.filter(domain=DEMO_DOMAIN).delete()
        shop = Shop.objects.create(domain=DEMO_DOMAIN, name="Bench demo", currency="USD")
        history_write(shop, events=DEMO_EVENTS, end=hour_floor(now) - HOUR, orders=DEMO_ORDERS)
        latency = spike_to_alert(shop, timeout=args.timeout)
        figures.update(latency)
        for name in ("spike", "whale", "bot"):
            value = latency[f"{name}_to_webhook_s"]
            print(f"{name}: " + ("no alert" if value is None else f"alerted in {value:.1f} s"))
        Shop.objects.filter(domain=DEMO_DOMAIN).delete()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
