import time

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from analytics.services.rollups import rollups_rebuild
from events.models import Shop


class Command(BaseCommand):
    help = "Drop and recompute the analytics rollups of one shop (--shop DOMAIN) or of all shops."

    def add_arguments(self, parser):
        parser.add_argument("--shop", help="shop domain (default: every shop)")

    def handle(self, *args, **options):
        shops = Shop.objects.all()
        if options["shop"]:
            shops = shops.filter(domain=options["shop"])
            if not shops.exists():
                raise CommandError(f"No shop with domain {options['shop']!r}.")
        for shop in shops:
            started = time.monotonic()
            result = rollups_rebuild(shop_id=shop.pk, now=timezone.now())
            self.stdout.write(
                f"{shop.domain}: rollups rebuilt in {time.monotonic() - started:.1f}s "
                f"({result.days} days)"
            )
