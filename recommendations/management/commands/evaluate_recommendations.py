import orjson
from django.core.management.base import BaseCommand, CommandError

from events.models import Shop
from recommendations.evaluation import recommendations_evaluate


class Command(BaseCommand):
    help = "Time-split leave-last-out evaluation of the recommenders; prints JSON."

    def add_arguments(self, parser):
        parser.add_argument("--shop", required=True, help="shop domain")
        parser.add_argument("--k", type=int, default=10)
        parser.add_argument("--seed", type=int, default=0, help="seed of the random baseline")

    def handle(self, *args, **options):
        shop = Shop.objects.filter(domain=options["shop"]).first()
        if shop is None:
            raise CommandError(f"no shop {options['shop']!r}")
        result = recommendations_evaluate(shop_id=shop.pk, k=options["k"], seed=options["seed"])
        self.stdout.write(
            orjson.dumps(
                {"shop": shop.domain, **result.as_dict()}, option=orjson.OPT_INDENT_2
            ).decode()
        )
