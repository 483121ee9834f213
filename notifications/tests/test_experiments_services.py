"""Experiment services: validation (one 400 envelope, nothing saved), lifecycle and phases."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError

from clickserver.errors import ApplicationError
from notifications.experiments import services
from notifications.experiments.rules import VariantIn
from notifications.models import Experiment, ExperimentPhase, Variant
from segments.models import Segment

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CONVERSION = {"kind": "conversion"}
AB = [VariantIn(key="control", weight=1, is_control=True), VariantIn(key="treatment", weight=1)]


def create(shop, **overrides):
    arguments = {
        "shop": shop,
        "key": "checkout-button",
        "name": "Checkout button",
        "unit": "person",
        "primary_metric": CONVERSION,
        "variants": AB,
    } | overrides
    return services.experiment_create(**arguments)


def saved_rows():
    return (Experiment.objects.count(), Variant.objects.count(), ExperimentPhase.objects.count())


@pytest.mark.django_db
def test_create_stores_a_draft_with_normalised_weights(shop):
    segment = Segment.objects.create(shop=shop, name="VIP")

    experiment = create(
        shop,
        hypothesis="One-click checkout raises conversion.",
        holdout_share=0.1,
        targeting={"segment": segment.pk, "device": ["mobile"], "source": ["Newsletter"]},
        secondary_metrics=[{"kind": "aov"}, {"kind": "custom_event_count", "event": "signup"}],
        guardrail_metrics=[{"kind": "bounce"}],
        variants=[
            VariantIn(key="control", weight=5, is_control=True),
            VariantIn(key="one-click", weight=3),
            VariantIn(key="express", weight=2, name="Express pay"),
        ],
    )

    experiment.refresh_from_db()
    assert (experiment.status, experiment.phase, experiment.live_key) == (
        "draft",
        0,
        "checkout-button",
    )
    assert experiment.targeting == {
        "segment": segment.pk,
        "device": ["mobile"],
        "source": ["newsletter"],
    }
    assert experiment.secondary_metrics == [
        {"kind": "aov"},
        {"kind": "custom_event_count", "event": "signup"},
    ]
    assert (experiment.winsor_percentile, experiment.is_sequential) == (99.9, True)
    assert [
        (v.key, v.weight, v.is_control, v.name, v.position) for v in experiment.variants.all()
    ] == [
        ("control", 0.5, True, "", 0),
        ("one-click", 0.3, False, "", 1),
        ("express", 0.2, False, "Express pay", 2),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"variants": [VariantIn(key="control", weight=1, is_control=True)]}, "variants"),
        (
            {
                "variants": [
                    VariantIn(key="control", weight=1, is_control=True),
                    VariantIn(key="b", weight=0),
                ]
            },
            "variants",
        ),
        (
            {
                "variants": [
                    VariantIn(key="control", weight=1, is_control=True),
                    VariantIn(key="b", weight=-1),
                ]
            },
            "variants",
        ),
        (
            {
                "variants": [
                    VariantIn(key="control", weight=1, is_control=True),
                    VariantIn(key="b", weight=float("nan")),
                ]
            },
            "variants",
        ),
        (
            {"variants": [VariantIn(key="a", weight=1), VariantIn(key="b", weight=1)]},
            "variants",
        ),
        (
            {
                "variants": [
                    VariantIn(key="a", weight=1, is_control=True),
                    VariantIn(key="b", weight=1, is_control=True),
                ]
            },
            "variants",
        ),
        (
            {
                "variants": [
                    VariantIn(key="a", weight=1, is_control=True),
                    VariantIn(key="a", weight=1),
                ]
            },
            "variants",
        ),
        (
            {
                "variants": [
                    VariantIn(key="a b", weight=1, is_control=True),
                    VariantIn(key="c", weight=1),
                ]
            },
            "variants",
        ),
        (
            {
                "variants": [
                    VariantIn(key="control", weight=1e308, is_control=True),
                    VariantIn(key="b", weight=1e308),
                ]
            },
            "variants",
        ),
        (
            {
                "variants": [
                    VariantIn(key="control", weight=1e6, is_control=True),
                    VariantIn(key="b", weight=1e-320),
                ]
            },
            "variants",
        ),
        ({"primary_metric": {"kind": "happiness"}}, "primary_metric"),
        ({"primary_metric": {"kind": "custom_event_count"}}, "primary_metric"),
        ({"primary_metric": {"kind": "aov", "event": "x"}}, "primary_metric"),
        ({"secondary_metrics": [{"kind": "conversion"}, {"kind": "ltv"}]}, "secondary_metrics"),
        ({"guardrail_metrics": "bounce"}, "guardrail_metrics"),
        ({"key": "not a slug"}, "key"),
        ({"name": " "}, "name"),
        ({"unit": "device"}, "unit"),
        ({"holdout_share": 1.0}, "holdout_share"),
        ({"holdout_share": -0.1}, "holdout_share"),
        ({"winsor_percentile": 100.5}, "winsor_percentile"),
        ({"planned_mde": 0}, "planned_mde"),
        ({"is_sequential": "yes"}, "is_sequential"),
        ({"targeting": {"country": ["DE"]}}, "targeting"),
        ({"targeting": {"device": ["fridge"]}}, "targeting"),
        ({"targeting": {"score_min": 0.8, "score_max": 0.2}}, "targeting"),
        ({"targeting": {"score_min": 2}}, "targeting"),
        ({"targeting": {"visitor": "loyal"}}, "targeting"),
        ({"targeting": {"segment": 999_999}}, "targeting"),
        ({"targeting": {"source": []}}, "targeting"),
    ],
)
def test_create_rejects_invalid_input_and_saves_nothing(shop, overrides, field):
    with pytest.raises(ApplicationError) as error:
        create(shop, **overrides)

    assert (error.value.status, error.value.code) == (400, "invalid")
    assert list(error.value.fields) == [field]
    assert saved_rows() == (0, 0, 0)


@pytest.mark.django_db
def test_create_reports_every_error_at_once(shop):
    with pytest.raises(ApplicationError) as error:
        create(shop, key="", primary_metric={"kind": "x"}, variants=[])

    assert sorted(error.value.fields) == ["key", "primary_metric", "variants"]


@pytest.mark.django_db
def test_a_segment_of_another_shop_cannot_be_targeted(shop, other_shop):
    segment = Segment.objects.create(shop=other_shop, name="Theirs")

    with pytest.raises(ApplicationError) as error:
        create(shop, targeting={"segment": segment.pk})

    assert error.value.fields == {"targeting": ["targeting.segment: no such segment in this shop"]}
    assert saved_rows() == (0, 0, 0)


@pytest.mark.django_db
def test_a_key_in_use_by_a_draft_or_running_experiment_is_refused(shop, other_shop):
    draft = create(shop)
    create(other_shop)

    with pytest.raises(ApplicationError) as draft_error:
        create(shop, name="Again")
    services.experiment_start(experiment=draft, now=T0)
    with pytest.raises(ApplicationError) as running_error:
        create(shop, name="Again")

    assert (draft_error.value.status, draft_error.value.code) == (400, "conflict")
    assert running_error.value.fields == {"key": ["in use by a draft or running experiment"]}
    assert Experiment.objects.filter(shop=shop).count() == 1


@pytest.mark.django_db
def test_a_stopped_experiments_key_can_be_used_again(shop):
    first = create(shop)
    services.experiment_start(experiment=first, now=T0)
    services.experiment_stop(experiment=first, now=T0 + timedelta(days=7))

    second = create(shop, name="Second run")

    assert second.live_key == "checkout-button"
    assert Experiment.objects.get(pk=first.pk).live_key is None


@pytest.mark.django_db
def test_start_opens_phase_one_with_a_snapshot(shop):
    experiment = create(shop, holdout_share=0.05)

    services.experiment_start(experiment=experiment, now=T0)

    experiment.refresh_from_db()
    assert (experiment.status, experiment.phase, experiment.started_at) == ("running", 1, T0)
    assert list(
        ExperimentPhase.objects.values_list("number", "started_at", "ended_at", "holdout_share")
    ) == [(1, T0, None, 0.05)]
    assert ExperimentPhase.objects.get().variants == [
        {"key": "control", "weight": 0.5, "is_control": True},
        {"key": "treatment", "weight": 0.5, "is_control": False},
    ]


@pytest.mark.django_db
def test_changing_a_running_experiments_weights_starts_a_new_phase(shop):
    experiment = create(shop)
    services.experiment_start(experiment=experiment, now=T0)
    later = T0 + timedelta(days=3)

    services.experiment_variants_change(
        experiment=experiment,
        variants=[
            VariantIn(key="control", weight=1, is_control=True),
            VariantIn(key="treatment", weight=3),
        ],
        now=later,
    )

    experiment.refresh_from_db()
    assert experiment.phase == 2
    assert list(
        ExperimentPhase.objects.order_by("number").values_list("number", "started_at", "ended_at")
    ) == [(1, T0, later), (2, later, None)]
    assert ExperimentPhase.objects.get(number=2).variants == [
        {"key": "control", "weight": 0.25, "is_control": True},
        {"key": "treatment", "weight": 0.75, "is_control": False},
    ]
    assert list(experiment.variants.values_list("key", "weight")) == [
        ("control", 0.25),
        ("treatment", 0.75),
    ]


@pytest.mark.django_db
def test_the_same_variants_again_do_not_start_a_phase(shop):
    experiment = create(shop)
    services.experiment_start(experiment=experiment, now=T0)

    services.experiment_variants_change(
        experiment=experiment, variants=AB, now=T0 + timedelta(days=1)
    )

    assert (Experiment.objects.get().phase, ExperimentPhase.objects.count()) == (1, 1)


@pytest.mark.django_db
def test_changing_a_drafts_variants_opens_no_phase(shop):
    experiment = create(shop)

    services.experiment_update(
        experiment=experiment,
        data={
            "variants": [
                VariantIn(key="control", weight=1, is_control=True),
                VariantIn(key="b", weight=1),
                VariantIn(key="c", weight=2),
            ]
        },
        now=T0,
    )

    assert list(Variant.objects.values_list("key", "weight")) == [
        ("control", 0.25),
        ("b", 0.25),
        ("c", 0.5),
    ]
    assert (Experiment.objects.get().phase, ExperimentPhase.objects.count()) == (0, 0)


@pytest.mark.django_db
def test_update_of_a_running_experiment_with_variants_opens_a_phase(shop):
    experiment = create(shop)
    services.experiment_start(experiment=experiment, now=T0)

    services.experiment_update(
        experiment=experiment,
        data={
            "name": "Renamed",
            "variants": [
                VariantIn(key="control", weight=1, is_control=True),
                VariantIn(key="treatment", weight=1),
                VariantIn(key="third", weight=1),
            ],
        },
        now=T0 + timedelta(hours=1),
    )

    assert (Experiment.objects.get().name, Experiment.objects.get().phase) == ("Renamed", 2)


@pytest.mark.django_db
def test_a_running_experiments_design_is_fixed(shop):
    experiment = create(shop)
    services.experiment_start(experiment=experiment, now=T0)

    with pytest.raises(ApplicationError) as error:
        services.experiment_update(
            experiment=experiment,
            data={"name": "New", "holdout_share": 0.2, "targeting": {}},
            now=T0,
        )

    assert error.value.fields == {
        "holdout_share": ["fixed while running"],
        "targeting": ["fixed while running"],
    }
    experiment.refresh_from_db()
    assert (experiment.name, experiment.holdout_share) == ("Checkout button", 0.0)


@pytest.mark.django_db
def test_analysis_settings_of_a_running_experiment_can_change(shop):
    experiment = create(shop)
    services.experiment_start(experiment=experiment, now=T0)

    services.experiment_update(
        experiment=experiment,
        data={"guardrail_metrics": [{"kind": "bounce"}], "is_sequential": False},
        now=T0,
    )

    experiment.refresh_from_db()
    assert (experiment.guardrail_metrics, experiment.is_sequential) == ([{"kind": "bounce"}], False)


@pytest.mark.django_db
def test_invalid_new_variants_of_a_running_experiment_change_nothing(shop):
    experiment = create(shop)
    services.experiment_start(experiment=experiment, now=T0)

    with pytest.raises(ApplicationError) as error:
        services.experiment_update(
            experiment=experiment,
            data={"name": "Renamed", "variants": [VariantIn(key="control", weight=1)]},
            now=T0 + timedelta(days=1),
        )

    assert list(error.value.fields) == ["variants"]
    experiment.refresh_from_db()
    assert (experiment.name, experiment.phase, ExperimentPhase.objects.count()) == (
        "Checkout button",
        1,
        1,
    )
    assert list(Variant.objects.values_list("key", "weight")) == [
        ("control", 0.5),
        ("treatment", 0.5),
    ]


@pytest.mark.django_db
def test_update_refuses_unknown_fields(shop):
    experiment = create(shop)

    with pytest.raises(ApplicationError) as error:
        services.experiment_update(experiment=experiment, data={"status": "running"}, now=T0)

    assert error.value.fields == {"status": ["unknown field"]}
    assert Experiment.objects.get().status == "draft"


@pytest.mark.django_db
def test_a_draft_can_take_a_free_key_but_not_one_in_use(shop):
    experiment = create(shop)
    other = create(shop, key="banner")

    services.experiment_update(experiment=experiment, data={"key": "checkout-v2"}, now=T0)
    with pytest.raises(ApplicationError) as error:
        services.experiment_update(experiment=other, data={"key": "checkout-v2"}, now=T0)

    assert list(Experiment.objects.order_by("pk").values_list("key", "live_key")) == [
        ("checkout-v2", "checkout-v2"),
        ("banner", "banner"),
    ]
    assert error.value.code == "conflict"


@pytest.mark.django_db
def test_stop_ends_the_phase_and_frees_the_key(shop):
    experiment = create(shop)
    services.experiment_start(experiment=experiment, now=T0)
    end = T0 + timedelta(days=14)

    services.experiment_stop(experiment=experiment, now=end)

    experiment.refresh_from_db()
    assert (experiment.status, experiment.stopped_at, experiment.live_key) == ("stopped", end, None)
    assert ExperimentPhase.objects.get().ended_at == end


@pytest.mark.django_db
def test_a_stopped_experiment_cannot_be_started_edited_or_stopped(shop):
    experiment = create(shop)
    services.experiment_start(experiment=experiment, now=T0)
    services.experiment_stop(experiment=experiment, now=T0 + timedelta(days=1))
    later = T0 + timedelta(days=2)
    calls = [
        lambda: services.experiment_start(experiment=experiment, now=later),
        lambda: services.experiment_stop(experiment=experiment, now=later),
        lambda: services.experiment_update(experiment=experiment, data={"name": "x"}, now=later),
        lambda: services.experiment_variants_change(experiment=experiment, variants=AB, now=later),
    ]

    errors = []
    for call in calls:
        with pytest.raises(ApplicationError) as error:
            call()
        errors.append((error.value.status, error.value.fields))

    assert errors == [(400, {"status": ["stopped"]})] * 4
    experiment.refresh_from_db()
    assert (experiment.status, experiment.name, experiment.phase) == (
        "stopped",
        "Checkout button",
        1,
    )


@pytest.mark.django_db
def test_a_running_experiment_cannot_start_again_nor_stop_before_it_started(shop):
    experiment = create(shop)
    services.experiment_start(experiment=experiment, now=T0)

    with pytest.raises(ApplicationError) as again:
        services.experiment_start(experiment=experiment, now=T0 + timedelta(days=1))
    with pytest.raises(ApplicationError) as early:
        services.experiment_stop(experiment=experiment, now=T0 - timedelta(seconds=1))

    assert again.value.fields == {"status": ["running"]}
    assert early.value.fields == {"stopped_at": ["before start"]}
    experiment.refresh_from_db()
    assert (experiment.status, experiment.phase, ExperimentPhase.objects.count()) == (
        "running",
        1,
        1,
    )


@pytest.mark.django_db
def test_stopping_a_draft_discards_it(shop):
    experiment = create(shop)

    services.experiment_stop(experiment=experiment, now=T0)

    experiment.refresh_from_db()
    assert (experiment.status, experiment.started_at, ExperimentPhase.objects.count()) == (
        "stopped",
        None,
        0,
    )


@pytest.mark.django_db
def test_the_database_keeps_one_live_experiment_per_key(shop):
    """The guard behind the service's check, for two creates that race past it."""
    create(shop)

    with pytest.raises(IntegrityError):
        Experiment.objects.create(
            shop=shop,
            key="checkout-button",
            live_key="checkout-button",
            name="Racer",
            unit="person",
            primary_metric=CONVERSION,
        )


def test_the_definition_fields_are_the_design_and_the_analysis_fields():
    assert set(services.DEFINITION_FIELDS) == services.ANALYSIS_FIELDS | services.DESIGN_FIELDS
