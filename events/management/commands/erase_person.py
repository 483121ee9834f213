import orjson
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from clickserver.errors import ApplicationError
from events import selectors
from events.services import erasure


class Command(BaseCommand):
    help = (
        "Erase one person of a shop (events, sessions, identity, orders, scores, memberships, "
        "rejected payloads) and recompute the derived data of the days they touched."
    )

    def add_arguments(self, parser):
        parser.add_argument("--shop", required=True, help="shop domain")
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--user-id")
        who.add_argument("--anonymous-id")
        who.add_argument("--email", help="matched by its SHA-256, as the pipeline stores it")

    def handle(self, *args, **options):
        shop = selectors.shop_get_by_domain(domain=options["shop"])
        if shop is None:
            raise CommandError(f"No shop with domain {options['shop']!r}.")
        try:
            request = erasure.persons_erase(
                shop=shop,
                user_id=options["user_id"],
                anonymous_id=options["anonymous_id"],
                email=options["email"],
                now=timezone.now(),
            )
        except ApplicationError as error:
            raise CommandError(error.detail) from error
        self.stderr.write(f"{shop.domain}: raw rows erased; recomputing {len(request.days)} days")
        # In this process, so that the command returns with every answer already without them;
        # the worker's copy of the job then finds nothing pending.
        erasure.erasures_complete(shop_id=shop.pk, now=timezone.now())
        request.refresh_from_db()
        summary = {
            "erasure": request.pk,
            "kind": request.kind,
            "counts": request.counts,
            "days": len(request.days),
            "completed_at": request.completed_at,
        }
        self.stdout.write(orjson.dumps(summary).decode())
