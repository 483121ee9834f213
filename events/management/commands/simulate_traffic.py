import argparse
import heapq
import random
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import requests
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from events import selectors
from events.models import Shop
from events.simulator import Simulator, Visitor

BATCH = 100
MATCH = "match"
TICK_SECONDS = 1.0


def rate_argument(value: str) -> float | str:
    if value == MATCH:
        return value
    try:
        rate = float(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a number nor {MATCH!r}") from error
    if rate < 0:
        raise argparse.ArgumentTypeError("the rate cannot be negative")
    return rate


class Command(BaseCommand):
    help = "Send realistic shopper journeys through the real ingestion API over HTTP."

    def add_arguments(self, parser):
        parser.add_argument("--shop", required=True, help="shop domain")
        parser.add_argument("--visitors", type=int, default=1000, help="historical visits")
        parser.add_argument("--days", type=int, default=30, help="spread history over D days")
        parser.add_argument(
            "--rate",
            type=rate_argument,
            default=0.0,
            help=f"then R live visits/second on average (more in the shop's evening, fewer at "
            f"night); {MATCH!r}: the rate of the shop's last 28 days",
        )
        parser.add_argument(
            "--duration", type=float, default=0.0, help="live seconds (0: until ^C)"
        )
        parser.add_argument("--anomalies", action="store_true", help="spike, whale order, bot")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="clickserver base URL")
        parser.add_argument("--seed", type=int, default=7)

    def handle(self, *args, **options):
        shop = Shop.objects.filter(domain=options["shop"]).first()
        if shop is None:
            raise CommandError(f"No shop with domain {options['shop']!r}.")
        self.session = requests.Session()
        self.endpoint = options["url"].rstrip("/") + "/events/"
        self.write_key = shop.write_key
        simulator = self.simulator_build(shop, options)
        sent = self._send_all(self.history(simulator, options, now=timezone.now()))
        if options["anomalies"]:
            sent += self._send_all(simulator.anomalies(end=timezone.now()))
        self.stdout.write(f"sent {sent} events for {options['visitors']} visits")
        if options["rate"]:
            self._live(shop, simulator, options["rate"], options["duration"])

    # Overridden by notifications' `simulate_experiment`, which runs the visits through an
    # experiment (events imports no experiment code).
    def simulator_build(self, shop: Shop, options: dict) -> Simulator:
        return Simulator(shop_domain=shop.domain, seed=options["seed"], timezone=shop.timezone)

    def history(
        self, simulator: Simulator, options: dict, *, now: datetime
    ) -> Iterator[list[dict]]:
        return simulator.history(visitors=options["visitors"], days=options["days"], end=now)

    def _send_all(self, journeys) -> int:
        pending: list[dict] = []
        sent = 0
        for events in journeys:
            pending.extend(events)
            while len(pending) >= BATCH:
                sent += self._post(pending[:BATCH])
                del pending[:BATCH]
        if pending:
            sent += self._post(pending)
        return sent

    def _post(self, events: list[dict]) -> int:
        body = {"batch": events, "sent_at": timezone.now().isoformat()}
        for attempt in range(5):
            try:
                response = self.session.post(
                    self.endpoint, json=body, headers={"X-Write-Key": self.write_key}, timeout=30
                )
            except requests.ConnectionError:
                response = None
            if response is not None and response.status_code == 202:
                return response.json()["accepted"]
            if response is not None and response.status_code not in (429, 503):
                raise CommandError(
                    f"ingestion refused: {response.status_code} {response.text[:200]}"
                )
            time.sleep(min(2**attempt, 10))
        raise CommandError("ingestion kept failing; is the web server running?")

    def _live(self, shop: Shop, simulator: Simulator, rate: float | str, duration: float) -> None:
        """Visits arrive at random (Poisson) at `rate` times the hour's share of the shop's day;
        each event is sent when its time comes, so live sessions grow event by event.

        Returning visitors are the shop's recent visitors, in the share the history has.
        """
        traffic = selectors.shop_traffic_get(shop=shop, now=timezone.now())
        simulator.visitors.extend(
            Visitor(anonymous_id=a, user_id=u, purchases=1 if u else 0) for a, u in traffic.visitors
        )
        if rate == MATCH:
            if not traffic.visits_per_second:
                raise CommandError("--rate match needs history: the shop has no recent sessions.")
            rate = traffic.visits_per_second
        rate = float(rate)
        self.stdout.write(
            f"live traffic: {rate * 3600:.1f} visits/hour on average, "
            f"{traffic.returning_share:.0%} returning (Ctrl-C to stop)"
        )
        rng = random.Random(simulator.rng.random())
        pending: list[tuple[str, int, dict]] = []
        order = 0
        now = timezone.now()
        arrival = now + self._gap(rng, simulator, rate, now)
        started = time.monotonic()
        try:
            while not duration or time.monotonic() - started < duration:
                now = timezone.now()
                while arrival <= now:
                    visitor = simulator.visitor_for(
                        arrival, returning_share=traffic.returning_share
                    )
                    for event in simulator.journey(arrival, visitor=visitor):
                        order += 1
                        heapq.heappush(pending, (event["timestamp"], order, event))
                    arrival += self._gap(rng, simulator, rate, arrival)
                due = []
                stamp = now.isoformat()
                while pending and pending[0][0] <= stamp:
                    due.append(heapq.heappop(pending)[2])
                if due:
                    self._post(due)
                time.sleep(TICK_SECONDS)
        except KeyboardInterrupt:
            return

    @staticmethod
    def _gap(rng: random.Random, simulator: Simulator, rate: float, at: datetime) -> timedelta:
        return timedelta(seconds=rng.expovariate(rate * simulator.hourly_share(at)))
