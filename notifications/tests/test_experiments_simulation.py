"""The traffic simulator through an experiment: the real assignment, one exposure per visit, and
a true effect on purchases set on the command line."""

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command

from events.models import Event
from events.simulator import Simulator
from notifications.experiments import services
from notifications.experiments.assignment import Arm, unit_id_build, variant_assign
from notifications.experiments.rules import VariantIn
from notifications.experiments.simulation import simulated_experiment_build
from notifications.models import ExperimentPhase

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 16, 9, 0, tzinfo=UTC)
VARIANTS = [VariantIn(key="control", weight=1, is_control=True), VariantIn("treatment", 1)]


def started(shop, *, now=T0, **overrides):
    experiment = services.experiment_create(
        shop=shop,
        key="free-shipping",
        name="Free shipping banner",
        unit="person",
        primary_metric={"kind": "conversion"},
        variants=VARIANTS,
        holdout_share=0.1,
        **overrides,
    )
    return services.experiment_start(experiment=experiment, now=now)


def simulated(experiment, lifts):
    phase = ExperimentPhase.objects.get(experiment=experiment, number=experiment.phase)
    return simulated_experiment_build(experiment=experiment, phase=phase, lifts=lifts)


def conversions_by_variant(journeys) -> dict[str, tuple[int, int]]:
    """(visits exposed, visits with a purchase after the exposure) per variant."""
    exposed, bought = Counter(), Counter()
    for events in journeys:
        shown = [e for e in events if e["type"] == "experiment_exposure"]
        if shown:
            variant = shown[0]["properties"]["variant"]
            exposed[variant] += 1
            bought[variant] += any(e["type"] == "purchase" for e in events)
    return {variant: (exposed[variant], bought[variant]) for variant in sorted(exposed)}


@pytest.mark.django_db
def test_a_big_true_effect_shows_as_more_purchases_in_treatment(shop):
    experiment = services.experiment_stop(experiment=started(shop), now=T1)
    simulator = Simulator(
        shop_domain=shop.domain, seed=11, experiment=simulated(experiment, {"treatment": 1.0})
    )

    journeys = [
        simulator.journey(at)
        for at in simulator.visit_times(visits=4000, start=T0 - timedelta(days=7), end=T1)
    ]

    counts = conversions_by_variant(journeys)
    (control_n, control_bought), (treatment_n, treatment_bought) = (
        counts["control"],
        counts["treatment"],
    )
    assert set(counts) == {"control", "treatment"}
    assert 0.8 < control_n / treatment_n < 1.25
    assert treatment_bought / treatment_n > 1.6 * control_bought / control_n
    # Visits before the start or after the stop see no variant.
    outside = [j for j in journeys if not T0 <= datetime.fromisoformat(j[0]["timestamp"]) < T1]
    assert outside
    assert not any(e["type"] == "experiment_exposure" for j in outside for e in j)


@pytest.mark.django_db
def test_simulated_shoppers_get_the_real_assignment_once_per_visit(shop):
    experiment = started(shop)
    simulator = Simulator(shop_domain=shop.domain, seed=5, experiment=simulated(experiment, {}))

    journeys = [
        simulator.journey(at)
        for at in simulator.visit_times(visits=300, start=T0, end=T0 + timedelta(days=3))
    ]

    exposures = [e for j in journeys for e in j if e["type"] == "experiment_exposure"]
    assert all(sum(e["type"] == "experiment_exposure" for e in j) <= 1 for j in journeys)
    assert 0.8 * 300 < len(exposures) < 300
    for event in exposures:
        unit_id = unit_id_build(
            unit="person", anonymous_id=event["anonymous_id"], user_id=event["user_id"]
        )
        expected = variant_assign(
            key="free-shipping",
            phase=1,
            unit_id=unit_id,
            arms=(Arm("control", 0.5), Arm("treatment", 0.5)),
            holdout_share=0.1,
        )
        assert event["properties"] == {
            "experiment": "free-shipping",
            "variant": expected,
            "phase": 1,
        }


@pytest.mark.django_db
def test_targeting_is_applied_to_the_simulated_visit(shop):
    experiment = started(shop, targeting={"source": ["newsletter"]})
    simulator = Simulator(shop_domain=shop.domain, seed=5, experiment=simulated(experiment, {}))

    journeys = [
        simulator.journey(at)
        for at in simulator.visit_times(visits=300, start=T0, end=T0 + timedelta(days=3))
    ]

    exposed = [j for j in journeys if any(e["type"] == "experiment_exposure" for e in j)]
    assert exposed
    assert all("utm_source=newsletter" in j[0]["url"] for j in exposed)


@pytest.mark.django_db(transaction=True)
def test_the_command_sends_exposures_and_purchases_through_ingestion(
    live_server, shop, celery_eager
):
    now = datetime.now(tz=UTC)
    started(shop, now=now - timedelta(days=3))

    call_command(
        "simulate_experiment",
        "--shop", shop.domain, "--experiment", "free-shipping", "--effect", "0.5",
        "--visitors", "150", "--url", live_server.url, "--seed", "3",
    )  # fmt: skip

    exposures = Event.objects.filter(shop=shop, type="experiment_exposure")
    assert 0.8 * 150 < exposures.count() < 150
    assert {(e.properties["experiment"], e.properties["phase"]) for e in exposures} == {
        ("free-shipping", 1)
    }
    assert {e.properties["variant"] for e in exposures} == {"control", "treatment"}
    assert Event.objects.filter(shop=shop, type="purchase").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--experiment", "nope"], "No experiment 'nope'"),
        (["--experiment", "free-shipping", "--effect", "other=0.1"], "has no variant 'other'"),
    ],
)
def test_the_command_refuses_what_it_cannot_simulate(shop, arguments, message):
    started(shop)

    with pytest.raises(CommandError, match=message):
        call_command("simulate_experiment", "--shop", shop.domain, *arguments)


@pytest.mark.django_db
def test_the_command_refuses_segment_targeting(shop):
    segment = shop.segments.create(name="VIP")
    started(shop, targeting={"segment": segment.pk})

    with pytest.raises(CommandError, match="segment or score targeting"):
        call_command("simulate_experiment", "--shop", shop.domain, "--experiment", "free-shipping")


@pytest.mark.django_db(transaction=True)
def test_the_demo_has_a_finished_and_a_running_experiment_with_exposures(
    live_server, shop, celery_eager
):
    arguments = ["--shop", shop.domain, "--url", live_server.url, "--scale", "0.05"]

    call_command("demo_experiments", *arguments)
    call_command("demo_experiments", *arguments)

    experiments = {e.key: e for e in shop.experiments.all()}
    assert {key: e.status for key, e in experiments.items()} == {
        "free-shipping-banner": "stopped",
        "one-click-checkout": "running",
    }
    exposed = Counter(
        e.properties["experiment"] for e in Event.objects.filter(type="experiment_exposure")
    )
    assert set(exposed) == {"free-shipping-banner", "one-click-checkout"}
    stopped = experiments["free-shipping-banner"]
    times = Event.objects.filter(
        type="experiment_exposure", properties__experiment="free-shipping-banner"
    ).values_list("occurred_at", flat=True)
    assert all(stopped.started_at <= at < stopped.stopped_at for at in times)
