"""`simulate_traffic` through an experiment: simulated shoppers get their variant by the real
assignment, see it (an `experiment_exposure` event) and buy with a true effect set here.

    manage.py simulate_experiment --shop demo-shop.example.com --experiment checkout-button \\
        --effect one-click=0.2 --visitors 5000

The visits are spread over the experiment's current phase (its start to its stop, or now); with
`--rate` live visits follow, as in `simulate_traffic`, through the phase as it was when the command
started (restart the command after a stop or a new phase).
"""

import argparse
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.core.management.base import CommandError

from events.management.commands.simulate_traffic import Command as TrafficCommand
from events.models import Shop
from events.simulator import SimulatedExperiment, Simulator
from notifications.experiments.selectors import experiment_get_by_key
from notifications.experiments.simulation import simulated_experiment_build, simulation_refusal
from notifications.models import ExperimentPhase

EVERY_TREATMENT = "*"
MIN_WINDOW = timedelta(hours=1)


def effect_argument(value: str) -> tuple[str, float]:
    """`VARIANT=LIFT`, or a bare LIFT for every variant but the control."""
    variant, _, lift = value.rpartition("=")
    try:
        number = float(lift)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{value!r}: VARIANT=LIFT or LIFT, e.g. 0.1") from error
    if number < -1:
        raise argparse.ArgumentTypeError("a lift below -1 (-100 %) is no probability")
    return variant or EVERY_TREATMENT, number


class Command(TrafficCommand):
    help = (
        "Send simulated shoppers through an experiment (exposures, and purchases with a true "
        "effect) over the real ingestion API."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--experiment", required=True, help="the experiment's key")
        parser.add_argument(
            "--effect",
            type=effect_argument,
            action="append",
            default=[],
            help="the true relative effect on a visit's chance to buy: VARIANT=LIFT (0.2: +20 %%), "
            "or LIFT for every non-control variant; repeatable; default none (an A/A test)",
        )

    def simulator_build(self, shop: Shop, options: dict) -> Simulator:
        simulator = super().simulator_build(shop, options)
        self.simulated = simulator.experiment = self.experiment_build(shop, options)
        return simulator

    def experiment_build(self, shop: Shop, options: dict) -> SimulatedExperiment:
        experiment = experiment_get_by_key(shop=shop, key=options["experiment"])
        if experiment is None:
            raise CommandError(f"No experiment {options['experiment']!r} in {shop.domain}.")
        refusal = simulation_refusal(experiment)
        if refusal:
            raise CommandError(f"Cannot simulate {experiment.key!r}: {refusal}.")
        phase = ExperimentPhase.objects.get(experiment=experiment, number=experiment.phase)
        variants = {v["key"]: v["is_control"] for v in phase.variants}
        lifts: dict[str, float] = {}
        for variant, lift in options["effect"]:
            if variant == EVERY_TREATMENT:
                lifts |= {key: lift for key, is_control in variants.items() if not is_control}
            elif variant in variants:
                lifts[variant] = lift
            else:
                raise CommandError(f"{experiment.key!r} has no variant {variant!r}.")
        return simulated_experiment_build(experiment=experiment, phase=phase, lifts=lifts)

    def history(
        self, simulator: Simulator, options: dict, *, now: datetime
    ) -> Iterator[list[dict]]:
        start, end = self.simulated.start or now, min(self.simulated.end or now, now)
        if options["visitors"] and end - start < MIN_WINDOW:
            # The visit times are drawn by the hour of the shop's day: a shorter window would
            # hardly ever be hit. Live visits (--rate) need no window.
            raise CommandError(f"The phase has run for less than {MIN_WINDOW}: use --visitors 0.")
        for at in simulator.visit_times(visits=options["visitors"], start=start, end=end):
            yield simulator.journey(at)
