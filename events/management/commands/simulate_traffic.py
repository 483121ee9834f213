import time
from datetime import timedelta

import requests
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from events.models import Shop
from events.simulator import Simulator

BATCH = 100


class Command(BaseCommand):
    help = "Send realistic shopper journeys through the real ingestion API over HTTP."

    def add_arguments(self, parser):
        parser.add_argument("--shop", required=True, help="shop domain")
        parser.add_argument("--visitors", type=int, default=1000, help="historical visits")
        parser.add_argument("--days", type=int, default=30, help="spread history over D days")
        parser.add_argument("--rate", type=float, default=0.0, help="then R live visits/second")
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
        simulator = Simulator(shop_domain=shop.domain, seed=options["seed"])
        now = timezone.now()
        sent = self._send_all(
            simulator.history(visitors=options["visitors"], days=options["days"], end=now)
        )
        if options["anomalies"]:
            sent += self._send_all(simulator.anomalies(end=timezone.now()))
        self.stdout.write(f"sent {sent} events for {options['visitors']} visits")
        if options["rate"] > 0:
            self._live(simulator, options["rate"], options["duration"])

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

    def _live(self, simulator: Simulator, rate: float, duration: float) -> None:
        started = time.monotonic()
        self.stdout.write(f"live traffic: {rate} visits/s (Ctrl-C to stop)")
        try:
            while not duration or time.monotonic() - started < duration:
                now = timezone.now()
                # A visit that began a few minutes ago: send what has happened by now.
                visit = simulator.journey(now - timedelta(minutes=5))
                self._post([e for e in visit if e["timestamp"] <= now.isoformat()] or visit[:1])
                time.sleep(1 / rate)
        except KeyboardInterrupt:
            return
