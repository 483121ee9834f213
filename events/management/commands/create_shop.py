import orjson
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from events.services.shops import shop_create


class Command(BaseCommand):
    help = "Create a shop (and its owner if new); print its ids and keys as one line of JSON."

    def add_arguments(self, parser):
        parser.add_argument("--domain", required=True)
        parser.add_argument("--owner", required=True, help="username of the owner")
        parser.add_argument("--name", default="")
        parser.add_argument("--webhook-secret", default=None, help="the Shopify app secret")
        parser.add_argument("--timezone", default="UTC")
        parser.add_argument("--currency", default="USD")

    def handle(self, *args, **options):
        try:
            created = shop_create(
                domain=options["domain"],
                owner_username=options["owner"],
                name=options["name"],
                webhook_secret=options["webhook_secret"],
                timezone=options["timezone"],
                currency=options["currency"],
            )
        except IntegrityError:
            raise CommandError(
                f"A shop with domain {options['domain']!r} exists already."
            ) from None
        except ValidationError as error:
            problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in error.message_dict.items())
            raise CommandError(problems) from None
        self.stdout.write(
            orjson.dumps(
                {
                    "shop_id": created.shop.pk,
                    "write_key": created.shop.write_key,
                    "api_token": created.api_token,
                }
            ).decode()
        )
