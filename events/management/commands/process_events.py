import sys
import time

import orjson
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from events import selectors
from events.follow_ups import StageResult, follow_ups, follow_ups_run
from events.models import Person, Session, Shop
from events.services.pipeline import events_process

# How long to wait for events younger than PIPELINE_SETTLE_SECONDS before giving up on them.
SETTLE_GRACE_SECONDS = 5.0


class Command(BaseCommand):
    help = (
        "Run the pipeline in the foreground until it has caught up, then bring everything derived "
        "from it up to date (rollups, live scores, segments: settings.PIPELINE_FOLLOW_UPS)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--shop", help="shop domain (default: every active shop)")
        parser.add_argument("--batch-size", type=int, default=settings.PIPELINE_BATCH_SIZE)
        parser.add_argument(
            "--no-follow-ups",
            action="store_true",
            help="only sessions and people; leave rollups, scores and segments to the worker",
        )

    def handle(self, *args, **options):
        shops = Shop.objects.filter(is_active=True)
        if options["shop"]:
            shops = Shop.objects.filter(domain=options["shop"])
            if not shops.exists():
                raise CommandError(f"No shop with domain {options['shop']!r}.")
        for shop in shops:
            summary = self._catch_up(shop, batch_size=options["batch_size"])
            if not options["no_follow_ups"]:
                summary["follow_ups"] = self._follow_ups(shop)
            self.stdout.write(orjson.dumps(summary).decode())

    def _follow_ups(self, shop: Shop) -> dict[str, float]:
        def report(stage: StageResult) -> None:
            self.stderr.write(f"{shop.domain}: {stage.stage} up to date ({stage.seconds:.1f} s)")

        self.stderr.write(f"{shop.domain}: updating {', '.join(f.stage for f in follow_ups())}")
        results = follow_ups_run(shop_id=shop.pk, on_stage=report)
        return {stage.stage: round(stage.seconds, 2) for stage in results}

    def _catch_up(self, shop: Shop, *, batch_size: int) -> dict:
        backlog = selectors.shop_backlog(shop_id=shop.pk)
        progress = tqdm(
            total=backlog.events, unit=" events", file=sys.stderr, mininterval=1.0, desc=shop.domain
        )
        totals = {"events": 0, "sessions_created": 0, "persons_created": 0, "persons_merged": 0}
        started = time.monotonic()
        idle_since: float | None = None
        settle_wait = settings.PIPELINE_SETTLE_SECONDS + SETTLE_GRACE_SECONDS
        while True:
            result = events_process(shop_id=shop.pk, now=timezone.now(), batch_size=batch_size)
            progress.update(result.processed)
            totals["events"] += result.processed
            totals["sessions_created"] += result.assigned.sessions_created
            totals["persons_created"] += result.assigned.persons_created
            totals["persons_merged"] += result.assigned.persons_merged
            if result.has_more or result.processed:
                idle_since = None
                continue
            # Nothing settled is left; events still inside the settle window are worth a wait.
            if not selectors.shop_backlog(shop_id=shop.pk).events:
                break
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > settle_wait:
                break
            time.sleep(0.2)
        progress.close()
        seconds = time.monotonic() - started
        return {
            "shop": shop.domain,
            **totals,
            "sessions": Session.objects.filter(shop=shop).count(),
            "persons": Person.objects.filter(shop=shop).count(),
            "seconds": round(seconds, 2),
            "events_per_s": round(totals["events"] / seconds) if seconds else 0,
        }
