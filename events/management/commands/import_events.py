import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from tqdm import tqdm

from events import importers
from events.models import Shop
from events.services.imports import events_import


class Command(BaseCommand):
    help = "Import historical events from CSV, CSV.GZ or JSONL, streaming in bounded memory."

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--shop", required=True, help="shop domain")
        parser.add_argument("--format", required=True, choices=importers.FORMATS)
        parser.add_argument("--mapping", help="JSON column mapping (for --format csv)")
        parser.add_argument("--chunk-size", type=int, default=2000)
        parser.add_argument(
            "--process",
            action="store_true",
            help="then run process_events for the shop, so the analytics show the import at once",
        )

    def handle(self, *args, **options):
        path = Path(options["path"])
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        shop = Shop.objects.filter(domain=options["shop"]).first()
        if shop is None:
            raise CommandError(f"No shop with domain {options['shop']!r}.")
        items = self._items(path, options, ZoneInfo(shop.timezone))
        started = time.monotonic()
        progress = tqdm(items, unit=" items", file=sys.stderr, mininterval=1.0)
        summary = events_import(
            shop=shop, items=progress, now=timezone.now(), chunk_size=options["chunk_size"]
        )
        progress.close()
        seconds = time.monotonic() - started
        next_step = f"manage.py process_events --shop {shop.domain}"
        self.stdout.write(
            orjson.dumps(
                {
                    "rows": summary.rows,
                    "stored": summary.stored,
                    "duplicates": summary.duplicates,
                    "rejected": summary.rejected,
                    "skipped": summary.skipped,
                    "orders": summary.orders,
                    "refunds": summary.refunds,
                    "seconds": round(seconds, 1),
                    "next": "processing now" if options["process"] else next_step,
                }
            ).decode()
        )
        if options["process"]:
            call_command("process_events", shop=shop.domain, stdout=self.stdout, stderr=self.stderr)
        else:
            # The events are stored but not yet in sessions or the analytics: say what does that.
            self.stderr.write(
                f"Imported. Run `{next_step}` (or keep a worker running) to build sessions, "
                "rollups and scores; the analytics show the import after that."
            )

    def _items(self, path: Path, options: dict, tz: ZoneInfo):
        fmt = options["format"]
        if fmt == "csv" and not options["mapping"]:
            raise CommandError("--format csv needs --mapping FILE.json")
        handle = importers.open_text(path)
        if fmt == "taobao":
            return importers.read_taobao(handle)
        if fmt == "rees46":
            return importers.read_rees46(handle)
        if fmt == "segment":
            return importers.read_segment(handle)
        if fmt == "csv":
            mapping = orjson.loads(Path(options["mapping"]).read_bytes())
            return importers.read_mapped_csv(handle, mapping)
        with importers.open_text(path) as first_pass:
            orders = importers.online_retail_orders(first_pass, tz)
        return importers.read_online_retail(handle, orders, tz)
