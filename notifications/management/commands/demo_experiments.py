"""The demo shop's experiments (`make demo`): one finished and one running, with simulated
shoppers sent through each over the ingestion API (`simulate_experiment`).

Idempotent: an experiment whose key the shop already has is left as it is, and its traffic is not
sent again.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from events.models import Shop
from notifications.experiments import services
from notifications.experiments.rules import VariantIn
from notifications.models import Experiment


@dataclass(frozen=True)
class DemoExperiment:
    key: str
    name: str
    hypothesis: str
    variants: tuple[VariantIn, ...]
    effect: str  # simulate_experiment's --effect: the true effect the results should find
    started_days_ago: int
    stopped_days_ago: int | None
    visitors: int
    seed: int  # not the history's (7): other visitors, other event ids


DEMO_EXPERIMENTS = (
    DemoExperiment(
        key="free-shipping-banner",
        name="Free-shipping banner",
        hypothesis="A free-shipping banner over €40 raises conversion.",
        variants=(VariantIn("control", 1, is_control=True), VariantIn("banner", 1)),
        # Large enough to be found in the demo's 3,000 visits (about 1,100 units an arm).
        effect="banner=0.6",
        started_days_ago=45,
        stopped_days_ago=17,
        visitors=3000,
        seed=17,
    ),
    DemoExperiment(
        key="one-click-checkout",
        name="One-click checkout",
        hypothesis="Fewer checkout steps lose fewer carts.",
        variants=(VariantIn("control", 1, is_control=True), VariantIn("one-click", 1)),
        effect="one-click=0.1",
        started_days_ago=14,
        stopped_days_ago=None,
        visitors=1500,
        seed=27,
    ),
)


class Command(BaseCommand):
    help = "Create the demo shop's experiments (one finished, one running) and their traffic."

    def add_arguments(self, parser):
        parser.add_argument("--shop", required=True, help="shop domain")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="clickserver base URL")
        parser.add_argument("--scale", type=float, default=1.0, help="times the demo's visits")

    def handle(self, *args, **options):
        shop = Shop.objects.filter(domain=options["shop"]).first()
        if shop is None:
            raise CommandError(f"No shop with domain {options['shop']!r}.")
        now = timezone.now()
        for demo in DEMO_EXPERIMENTS:
            if Experiment.objects.filter(shop=shop, key=demo.key).exists():
                self.stdout.write(f"{demo.key}: already there")
                continue
            experiment = services.experiment_create(
                shop=shop,
                key=demo.key,
                name=demo.name,
                hypothesis=demo.hypothesis,
                unit="person",
                primary_metric={"kind": "conversion"},
                secondary_metrics=[{"kind": "revenue_per_unit"}, {"kind": "aov"}],
                guardrail_metrics=[{"kind": "bounce"}],
                variants=demo.variants,
                holdout_share=0.05,
                planned_mde=0.1,
            )
            started = now - timedelta(days=demo.started_days_ago)
            experiment = services.experiment_start(experiment=experiment, now=started)
            if demo.stopped_days_ago is not None:
                stopped = now - timedelta(days=demo.stopped_days_ago)
                experiment = services.experiment_stop(experiment=experiment, now=stopped)
            visitors = round(demo.visitors * options["scale"])
            call_command(
                "simulate_experiment",
                "--shop", shop.domain, "--experiment", demo.key, "--effect", demo.effect,
                "--visitors", str(visitors), "--seed", str(demo.seed), "--url", options["url"],
                stdout=self.stdout,
            )  # fmt: skip
            self.stdout.write(f"{demo.key}: {experiment.status}, {visitors} visits sent")
