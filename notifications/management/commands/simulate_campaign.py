"""Simulated shoppers through a running campaign, on a simulated clock: the real ingestion,
pipeline, live scores and decisions, the pending answer, the notification's events, and purchases
with a true effect for those shown a notification; then the campaign's experiment results.

    manage.py simulate_campaign --shop demo-shop.example.com --campaign still-deciding \\
        --effect 0.2 --visitors 5000

The visits start over the campaign's current phase (its start to 45 minutes ago, so that they
end before now). It writes in this process (no web server needed) and reads the shop's active
conversion model. docs/campaigns.md, "Simulating a campaign".
"""

import argparse
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from events.models import Shop
from notifications.campaigns.simulation import TICK, campaign_simulate, simulation_refusal
from notifications.models import Campaign, ExperimentPhase
from notifications.selectors import model_version_active

MIN_WINDOW_HOURS = 1
# The visits start this long before now at the latest: the longest simulated visit (a landing
# page, six product views, a cart, a checkout and a purchase, 150 s a step at most, answered at
# the next tick) ends within it, so no event or order lands in the future.
VISIT_ROOM = timedelta(minutes=45)


def effect_argument(value: str) -> float:
    try:
        number = float(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number, e.g. 0.2") from error
    if number < -1:
        raise argparse.ArgumentTypeError("an effect below -1 (-100 %) is no probability")
    return number


class Command(BaseCommand):
    help = (
        "Send simulated shoppers through a running campaign (decisions, notifications, and "
        "purchases with a true effect) and print its experiment's uplift against the truth."
    )

    def add_arguments(self, parser):
        parser.add_argument("--shop", required=True, help="shop domain")
        parser.add_argument("--campaign", required=True, help="the campaign's key")
        parser.add_argument(
            "--effect",
            type=effect_argument,
            default=0.0,
            help="the true relative effect of being shown the notification on a visit's chance "
            "to buy (0.2: +20 %%); the holdout is unaffected; default 0 (an A/A test)",
        )
        parser.add_argument("--visitors", type=int, default=1000, help="visits to simulate")
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument(
            "--tick",
            type=int,
            default=int(TICK.total_seconds()),
            help="simulated seconds between two pipeline runs (and the shoppers' polls); "
            "longer is faster and answers fewer shoppers while they still browse",
        )

    def handle(self, *args, **options):
        shop = Shop.objects.filter(domain=options["shop"]).first()
        if shop is None:
            raise CommandError(f"No shop with domain {options['shop']!r}.")
        campaign = (
            Campaign.objects.select_related("experiment", "shop")
            .filter(shop=shop, key=options["campaign"])
            .first()
        )
        if campaign is None:
            raise CommandError(f"No campaign {options['campaign']!r} in {shop.domain}.")
        refusal = simulation_refusal(campaign)
        if refusal:
            raise CommandError(f"Cannot simulate {campaign.key!r}: {refusal}.")
        if model_version_active(shop=shop) is None:
            raise CommandError(
                "The shop has no active conversion model, so no live scores: "
                f"manage.py train_conversion_model --shop {shop.domain}"
            )
        if options["visitors"] < 1 or options["tick"] < 1:
            raise CommandError("--visitors and --tick must be at least 1.")
        now = timezone.now()
        phase = ExperimentPhase.objects.get(
            experiment=campaign.experiment, number=campaign.experiment.phase
        )
        end = now - VISIT_ROOM
        if (end - phase.started_at).total_seconds() < MIN_WINDOW_HOURS * 3600:
            # Visit times are drawn by the hour of the shop's day: a shorter window is hardly
            # ever hit.
            raise CommandError(
                f"The campaign has run for less than {MIN_WINDOW_HOURS} h "
                f"{VISIT_ROOM.seconds // 60} min (the visits end before now)."
            )
        outcome = campaign_simulate(
            campaign=campaign,
            visitors=options["visitors"],
            effect=options["effect"],
            start=phase.started_at,
            end=end,
            seed=options["seed"],
            tick=timedelta(seconds=options["tick"]),
            progress=self.stdout.write,
        )
        self.stdout.write(
            f"{outcome.visits} visits, {outcome.events} events, decisions {outcome.decisions}, "
            f"exposed while browsing {outcome.exposed}, bought {outcome.bought}, "
            f"shown {outcome.shown}, clicked {outcome.clicked}, dismissed {outcome.dismissed}"
        )
        for line in uplift_lines(outcome.result.data if outcome.result else {}):
            self.stdout.write(line)
        self.stdout.write(f"true effect of being shown: {options['effect']:+.1%}")


def uplift_lines(document: dict) -> list[str]:
    """Each content arm's measured uplift on the primary metric against the holdout."""
    primary = document.get("primary_metric")
    lines = []
    for arm in document.get("arms", []):
        if arm["is_control"]:
            continue
        relative = arm["metrics"].get(primary, {}).get("relative") or {}
        if relative:
            lines.append(
                f"{arm['variant']}: {arm['units']} units, {arm['conversions']} converted, "
                f"uplift {relative['estimate']:+.1%} "
                f"[{relative['ci_low']:+.1%}, {relative['ci_high']:+.1%}]"
            )
    return lines
