"""The demo shop's running campaign (`make demo`): a score-band notification with two content
variants and a holdout, started a few hours ago, with simulated shoppers sent through it
(`simulate_campaign`: real decisions, notification events, purchases with a true effect), so its
decisions and its experiment's results have something to show.

Idempotent: a shop that already has the campaign is left as it is. Needs the shop's active
conversion model (the demo trains one first).
"""

from datetime import timedelta

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from events.models import Shop
from notifications.campaigns import services
from notifications.campaigns.rules import ContentIn
from notifications.campaigns.selectors import score_band_default
from notifications.models import Campaign

KEY = "still-deciding"
NAME = "Still deciding: a nudge for the undecided"
VARIANTS = (
    ContentIn(
        key="free-shipping",
        title="Free shipping on {product} today",
        body="Order in the next hour and we ship it free.",
        cta_url="/cart",
        cta_text="Back to my cart",
    ),
    ContentIn(
        key="ten-off",
        title="10 % off {product}",
        body="A little something to help you decide.",
        cta_url="/cart",
        cta_text="Use my 10 %",
    ),
)
HOLDOUT_SHARE = 0.2
STARTED_HOURS_AGO = 3
VISITORS = 500
EFFECT = "0.2"  # the true effect of being shown the notification
SEED = 47  # not the history's (7) or the experiments' (17, 27, 37)


class Command(BaseCommand):
    help = "Create and start the demo shop's campaign, and send simulated shoppers through it."

    def add_arguments(self, parser):
        parser.add_argument("--shop", required=True, help="shop domain")
        parser.add_argument("--visitors", type=int, default=VISITORS)
        parser.add_argument("--tick", type=int, default=60, help="simulate_campaign's --tick")

    def handle(self, *args, **options):
        shop = Shop.objects.filter(domain=options["shop"]).first()
        if shop is None:
            raise CommandError(f"No shop with domain {options['shop']!r}.")
        if Campaign.objects.filter(shop=shop, key=KEY).exists():
            self.stdout.write(f"{KEY}: already there")
            return
        now = timezone.now()
        started = now - timedelta(hours=STARTED_HOURS_AGO)
        # The shop's own band (the 50th to 90th percentile of its recent live scores), or the
        # fixed default while it has too few scores.
        band = score_band_default(shop=shop, now=now)
        campaign = services.campaign_create(
            shop=shop,
            key=KEY,
            name=NAME,
            trigger={"kind": "score_band", "low": band.low, "high": band.high},
            variants=list(VARIANTS),
            holdout_share=HOLDOUT_SHARE,
            now=started,
        )
        services.campaign_start(campaign=campaign, now=started)
        call_command(
            "simulate_campaign",
            "--shop", shop.domain, "--campaign", KEY, "--effect", EFFECT,
            "--visitors", str(options["visitors"]), "--seed", str(SEED),
            "--tick", str(options["tick"]),
            stdout=self.stdout,
        )  # fmt: skip
        self.stdout.write(f"{KEY}: running, band {band.low}–{band.high}")
