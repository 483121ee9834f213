"""Exposures, metrics and results on MariaDB: events in through the ingestion API, processed by
the pipeline, folded into exposures and analysed (docs/experiments.md, "Exposures" to "Results")."""

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from events.follow_ups import follow_ups
from events.models import Order, PipelineJob, PipelineWatermark
from events.services.erasure import erasures_complete, persons_erase
from notifications.experiments import services
from notifications.experiments.exposures import exposures_extract
from notifications.experiments.results import (
    experiment_results_compute,
    experiments_refresh,
    shops_with_experiments,
)
from notifications.experiments.rules import VariantIn
from notifications.models import ExperimentExposure, ExperimentResult

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=10)
KEY = "checkout"


def running(shop, **overrides):
    arguments = {
        "shop": shop,
        "key": KEY,
        "name": "Checkout button",
        "unit": "person",
        "primary_metric": {"kind": "conversion"},
        "secondary_metrics": [
            {"kind": "revenue_per_unit"},
            {"kind": "aov"},
            {"kind": "add_to_cart_rate"},
            {"kind": "custom_event_count", "event": "newsletter_signup"},
        ],
        "guardrail_metrics": [{"kind": "bounce"}],
        "variants": [VariantIn(key="control", weight=1, is_control=True), VariantIn("b", 1)],
        "winsor_percentile": 100.0,
        "is_sequential": False,
    } | overrides
    experiment = services.experiment_create(**arguments)
    return services.experiment_start(experiment=experiment, now=T0)


def event(visitor, kind, at, *, n=0, **fields):
    return {
        "event_id": f"{visitor}-{kind}-{n}",
        "type": kind,
        "anonymous_id": visitor,
        "timestamp": at.isoformat(),
        **fields,
    }


def exposure(visitor, variant, at, *, n=0, phase=1, **fields):
    properties = {"experiment": KEY, "variant": variant, "phase": phase}
    return event(visitor, "experiment_exposure", at, n=n, properties=properties, **fields)


def purchase(visitor, order, revenue, at):
    return event(visitor, "purchase", at, n=order, order={"id": order, "revenue": revenue})


def ingest(ingest_client, events):
    response = ingest_client.post("/events/", {"batch": events})
    assert response.status_code == 202, response.content
    assert response.json()["rejected"] == []


def rows(experiment):
    return sorted(
        ExperimentExposure.objects.filter(experiment=experiment).values_list(
            "unit_id",
            "variant",
            "exposure_count",
            "is_seen_in_other_variant",
            "is_outside_targeting",
        )
    )


@pytest.mark.django_db
def test_the_same_exposure_twice_is_one_exposure(shop, ingest_client, process_all):
    experiment = running(shop)
    at = T0 + timedelta(hours=1)
    ingest(ingest_client, [exposure("v-1", "b", at)])
    ingest(ingest_client, [exposure("v-1", "b", at)])
    process_all(shop)

    exposures_extract(shop_id=shop.pk, now=NOW)
    exposures_extract(shop_id=shop.pk, now=NOW)

    assert rows(experiment) == [("anon:v-1", "b", 1, False, False)]
    mark = PipelineWatermark.objects.get(job=PipelineJob.EXPERIMENTS, shop=shop)
    assert (
        mark.position == PipelineWatermark.objects.get(job=PipelineJob.EVENTS, shop=shop).position
    )


@pytest.mark.django_db
def test_later_batches_add_to_the_count_and_the_earliest_exposure_wins(
    shop, ingest_client, process_all
):
    experiment = running(shop)
    ingest(ingest_client, [exposure("v-1", "b", T0 + timedelta(hours=2), n=1)])
    process_all(shop)
    exposures_extract(shop_id=shop.pk, now=NOW)

    ingest(ingest_client, [exposure("v-1", "b", T0 + timedelta(hours=1), n=2)])
    process_all(shop)
    exposures_extract(shop_id=shop.pk, now=NOW)

    row = ExperimentExposure.objects.get(experiment=experiment)
    assert (row.exposure_count, row.first_exposed_at) == (2, T0 + timedelta(hours=1))


@pytest.mark.django_db
def test_exposures_naming_no_phase_or_variant_are_ignored(shop, ingest_client, process_all):
    experiment = running(shop)
    at = T0 + timedelta(hours=1)
    ingest(
        ingest_client,
        [
            exposure("v-1", "nope", at),
            exposure("v-2", "b", at, phase=2),
            exposure("v-3", "b", T0 - timedelta(hours=1)),
            event("v-4", "experiment_exposure", at, properties={"experiment": "other"}),
        ],
    )
    process_all(shop)

    result = exposures_extract(shop_id=shop.pk, now=NOW)

    assert (result.events, result.ignored, rows(experiment)) == (4, 4, [])


@pytest.mark.django_db
def test_a_unit_seen_in_two_variants_is_flagged_and_left_out(shop, ingest_client, process_all):
    experiment = running(shop)
    at = T0 + timedelta(hours=1)
    ingest(
        ingest_client,
        [
            exposure("v-1", "control", at, n=1),
            exposure("v-1", "b", at + timedelta(minutes=1), n=2),
            exposure("v-2", "b", at),
        ],
    )
    process_all(shop)

    experiments_refresh(shop_id=shop.pk, now=NOW)

    assert rows(experiment) == [
        ("anon:v-1", "control", 2, True, False),
        ("anon:v-2", "b", 1, False, False),
    ]
    data = ExperimentResult.objects.get(experiment=experiment).data
    assert data["exposures"] == {
        "units": 2,
        "analysed": 1,
        "excluded": {
            "seen_in_other_variant": 1,
            "outside_targeting": 0,
            "person_in_two_variants": 0,
            "without_person": 0,
        },
    }
    assert [(arm["variant"], arm["exposed"], arm["units"]) for arm in data["arms"]] == [
        ("control", 1, 0),
        ("b", 1, 1),
    ]


@pytest.mark.django_db
def test_an_exposure_outside_the_targeting_is_flagged(shop, ingest_client, process_all):
    experiment = running(shop, targeting={"visitor": "returning"})
    ingest(
        ingest_client,
        [
            # v-old visited two days before, so its exposure session is a returning visit.
            event("v-old", "page_view", T0 - timedelta(days=2)),
            exposure("v-old", "b", T0 + timedelta(hours=1)),
            exposure("v-new", "b", T0 + timedelta(hours=1)),
        ],
    )
    process_all(shop)

    experiments_refresh(shop_id=shop.pk, now=NOW)

    assert rows(experiment) == [
        ("anon:v-new", "b", 1, False, True),
        ("anon:v-old", "b", 1, False, False),
    ]
    excluded = ExperimentResult.objects.get(experiment=experiment).data["exposures"]["excluded"]
    assert excluded["outside_targeting"] == 1


@pytest.mark.django_db
def test_an_exposure_of_a_held_out_unit_is_flagged(shop, ingest_client, process_all):
    # docs/experiments.md's worked example: anon:visitor-21's holdout bucket is 0.01169.
    experiment = running(shop, holdout_share=0.1)
    at = T0 + timedelta(hours=1)
    ingest(ingest_client, [exposure("visitor-21", "b", at), exposure("visitor-2", "b", at)])
    process_all(shop)

    exposures_extract(shop_id=shop.pk, now=NOW)

    assert rows(experiment) == [
        ("anon:visitor-2", "b", 1, False, False),
        ("anon:visitor-21", "b", 1, False, True),
    ]


@pytest.mark.django_db
def test_a_person_merged_after_exposures_in_two_variants_is_left_out(
    shop, ingest_client, process_all
):
    experiment = running(shop)
    at = T0 + timedelta(hours=1)
    ingest(
        ingest_client,
        [exposure("phone", "control", at), exposure("laptop", "b", at), exposure("v-3", "b", at)],
    )
    process_all(shop)
    exposures_extract(shop_id=shop.pk, now=NOW)
    ingest(
        ingest_client,
        [
            event("phone", "identify", at + timedelta(hours=1), user_id="customer-7"),
            event("laptop", "identify", at + timedelta(hours=2), user_id="customer-7"),
        ],
    )
    process_all(shop)

    experiments_refresh(shop_id=shop.pk, now=NOW)

    persons = dict(
        ExperimentExposure.objects.filter(experiment=experiment).values_list("unit_id", "person_id")
    )
    assert persons["anon:phone"] == persons["anon:laptop"] is not None
    data = ExperimentResult.objects.get(experiment=experiment).data
    assert data["exposures"]["excluded"]["person_in_two_variants"] == 2
    assert [arm["units"] for arm in data["arms"]] == [0, 1]


@pytest.mark.django_db
def test_an_erased_persons_exposures_are_deleted(shop, ingest_client, process_all):
    experiment = running(shop)
    at = T0 + timedelta(hours=1)
    ingest(ingest_client, [exposure("v-1", "b", at), exposure("v-2", "control", at)])
    process_all(shop)
    exposures_extract(shop_id=shop.pk, now=NOW)

    persons_erase(shop=shop, anonymous_id="v-1", now=NOW)
    erasures_complete(shop_id=shop.pk, now=NOW)

    assert [row[0] for row in rows(experiment)] == ["anon:v-2"]


def shopping(ingest_client):
    """Control: c-1 buys 30 (refunded 10 later), c-2 buys 10 and 20, c-3 only looks (one page
    view, a bounce). Treatment b: b-1 buys 50 and had bought 40 in the pre-period, b-2 adds to
    cart and signs up twice, b-3 buys 15 after the window (not counted)."""
    at = T0 + timedelta(hours=1)
    minute = timedelta(minutes=1)
    ingest(
        ingest_client,
        [
            purchase("b-1", "o-pre", "40.00", T0 - timedelta(days=3)),
            exposure("c-1", "control", at),
            event("c-1", "page_view", at + minute),
            event("c-1", "page_view", at + 2 * minute, n=1),
            purchase("c-1", "o-1", "30.00", at + 3 * minute),
            exposure("c-2", "control", at),
            purchase("c-2", "o-2", "10.00", at + minute),
            purchase("c-2", "o-3", "20.00", at + 2 * minute),
            exposure("c-3", "control", at),
            event("c-3", "page_view", at + minute),
            exposure("b-1", "b", at),
            purchase("b-1", "o-4", "50.00", at + minute),
            exposure("b-2", "b", at),
            event("b-2", "add_to_cart", at + minute),
            event("b-2", "newsletter_signup", at + 2 * minute),
            event("b-2", "newsletter_signup", at + 3 * minute, n=1),
            exposure("b-3", "b", at),
            event("b-3", "page_view", at + minute),
        ],
    )


@pytest.mark.django_db
def test_metrics_of_a_small_example_by_hand(shop, ingest_client, process_all):
    experiment = running(shop)
    shopping(ingest_client)
    ingest(ingest_client, [purchase("b-3", "o-5", "15.00", NOW + timedelta(days=1))])
    process_all(shop)
    Order.objects.filter(shop=shop, order_id="o-1").update(refunded_amount=Decimal("10.00"))
    exposures_extract(shop_id=shop.pk, now=NOW)

    data = experiment_results_compute(experiment=experiment, now=NOW).data

    control, treatment = data["arms"]
    means = {name: values["mean"] for name, values in control["metrics"].items()}
    assert (control["units"], control["conversions"]) == (3, 2)
    assert means == pytest.approx(
        {
            "conversion": 2 / 3,
            "revenue_per_unit": (20 + 30 + 0) / 3,
            "aov": 50 / 3,
            "add_to_cart_rate": 0.0,
            "custom_event_count:newsletter_signup": 0.0,
            # c-3's exposure session holds one page view besides the exposure.
            "bounce": 1 / 3,
        }
    )
    means = {name: values["mean"] for name, values in treatment["metrics"].items()}
    assert (treatment["units"], treatment["conversions"]) == (3, 1)
    assert means == pytest.approx(
        {
            "conversion": 1 / 3,
            "revenue_per_unit": 50 / 3,
            "aov": 50.0,
            "add_to_cart_rate": 1 / 3,
            "custom_event_count:newsletter_signup": 2 / 3,
            # b-1's exposure session holds only its purchase; b-3's one page view.
            "bounce": 2 / 3,
        }
    )
    # CUPED: only b-1 converted in the pre-period, so pooled over the six units x = (0,0,0,1,0,0)
    # and y = (1,1,0,1,0,0): θ = (Σxy − ΣxΣy/6)/(Σx² − (Σx)²/6) = (1 − 3/6)/(1 − 1/6) = 0.6,
    # and the adjusted difference is (1/3 − 0.6·1/3) − (2/3 − 0.6·0).
    conversion = treatment["metrics"]["conversion"]
    assert conversion["cuped"]["theta"] == pytest.approx(0.6)
    assert conversion["absolute"]["estimate"] == pytest.approx((1 / 3 - 0.6 / 3) - 2 / 3)
    assert treatment["metrics"]["bounce"]["cuped"] is None


@pytest.mark.django_db
def test_a_session_experiment_counts_each_session_until_it_ends(shop, ingest_client, process_all):
    experiment = running(shop, unit="session")
    first, second = T0 + timedelta(hours=1), T0 + timedelta(hours=5)
    minute = timedelta(minutes=1)
    ingest(
        ingest_client,
        [
            exposure("v-1", "control", first, n=1),
            event("v-1", "page_view", first + minute),
            exposure("v-1", "b", second, n=2),
            purchase("v-1", "o-1", "30.00", second + minute),
        ],
    )
    process_all(shop)
    exposures_extract(shop_id=shop.pk, now=NOW)

    data = experiment_results_compute(experiment=experiment, now=NOW).data

    assert sorted(row[1] for row in rows(experiment)) == ["b", "control"]
    assert all(row[0].startswith("session:") for row in rows(experiment))
    control, treatment = data["arms"]
    assert (control["units"], control["conversions"]) == (1, 0)
    assert (treatment["units"], treatment["conversions"]) == (1, 1)
    assert control["metrics"]["bounce"]["mean"] == 1.0
    assert treatment["metrics"]["revenue_per_unit"]["mean"] == 30.0


@pytest.mark.django_db
def test_results_endpoint_end_to_end(
    shop, ingest_client, api_client, django_capture_on_commit_callbacks
):
    experiment = running(shop)
    shopping(ingest_client)

    with django_capture_on_commit_callbacks(execute=True):
        call_command("process_events", shop=shop.domain, stdout=io.StringIO(), stderr=io.StringIO())
    response = api_client.get(f"/experiments/{experiment.pk}/results/")

    assert response.status_code == 200
    body = response.json()
    assert [(a["variant"], a["units"], a["conversions"]) for a in body["arms"]] == [
        ("control", 3, 2),
        ("b", 3, 1),
    ]
    assert body["primary_metric"] == "conversion"
    assert body["verdict"].startswith("No variant differs significantly from control on conversion")
    assert {w["code"] for w in body["warnings"]} == {"few_units", "few_conversions"}
    assert body["timeline"][0]["variant"] == "b"


@pytest.mark.django_db
def test_results_as_csv(shop, ingest_client, api_client, process_all):
    experiment = running(shop)
    shopping(ingest_client)
    process_all(shop)
    experiments_refresh(shop_id=shop.pk, now=NOW)

    by_format = api_client.get(f"/experiments/{experiment.pk}/results/?format=csv")
    by_accept = api_client.get(f"/experiments/{experiment.pk}/results/", HTTP_ACCEPT="text/csv")

    assert by_format.status_code == by_accept.status_code == 200
    assert by_format["Content-Type"].startswith("text/csv")
    assert by_format.content == by_accept.content
    table = list(csv.DictReader(io.StringIO(by_format.content.decode())))
    assert len(table) == 2 * 6
    first = table[0]
    assert (first["variant"], first["metric"], first["units"], first["mean"]) == (
        "control",
        "conversion",
        "3",
        str(2 / 3),
    )


@pytest.mark.django_db
def test_results_are_shop_scoped_and_need_a_token(shop, other_shop, api_client):
    mine = running(shop)
    theirs = running(other_shop)
    draft = services.experiment_create(
        shop=shop,
        key="draft",
        name="Draft",
        unit="person",
        primary_metric={"kind": "conversion"},
        variants=[VariantIn(key="a", weight=1, is_control=True), VariantIn("b", 1)],
    )

    anonymous = APIClient().get(f"/experiments/{mine.pk}/results/")
    other = api_client.get(f"/experiments/{theirs.pk}/results/")
    no_phase = api_client.get(f"/experiments/{draft.pk}/results/")
    empty = api_client.get(f"/experiments/{mine.pk}/results/")

    assert anonymous.status_code in (401, 403)
    assert (other.status_code, other.json()["code"]) == (404, "not_found")
    assert (no_phase.status_code, no_phase.json()["fields"]) == (404, {"phase": ["no such phase"]})
    assert empty.status_code == 200
    assert empty.json()["verdict"] == "No exposed units yet."
    assert ExperimentResult.objects.filter(experiment=theirs).count() == 0


def test_experiments_run_after_every_batch_and_from_beat(settings):
    stages = {follow_up.stage: follow_up for follow_up in follow_ups()}
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}

    assert (stages["experiments"].task_path, stages["experiments"].kind) == (
        "notifications.tasks.experiments_refresh_task",
        "batch",
    )
    assert "notifications.tasks.experiments_refresh_sweep_task" in scheduled


@pytest.mark.django_db
def test_results_are_recomputed_once_stale_and_final_a_week_after_the_stop(shop, other_shop):
    experiment = running(shop)

    first = experiments_refresh(shop_id=shop.pk, now=NOW)
    fresh = experiments_refresh(shop_id=shop.pk, now=NOW + timedelta(minutes=4))
    stale = experiments_refresh(shop_id=shop.pk, now=NOW + timedelta(minutes=6))
    services.experiment_stop(experiment=experiment, now=NOW + timedelta(days=1))
    after_stop = experiments_refresh(shop_id=shop.pk, now=NOW + timedelta(days=1, minutes=1))
    final = experiments_refresh(shop_id=shop.pk, now=NOW + timedelta(days=8, minutes=10))
    frozen = experiments_refresh(shop_id=shop.pk, now=NOW + timedelta(days=9))

    computed = [r.results for r in (first, fresh, stale, after_stop, final, frozen)]
    assert computed == [1, 0, 1, 1, 1, 0]
    assert shops_with_experiments(now=NOW + timedelta(days=2)) == [shop.pk]
    assert shops_with_experiments(now=NOW + timedelta(days=9)) == []


@pytest.mark.django_db
def test_exposures_arriving_after_a_final_result_recompute_it(shop, ingest_client, process_all):
    # The demo's order: the result of a long-stopped experiment was stored before its exposures
    # were processed; final by age, it must still take them.
    experiment = running(shop)
    services.experiment_stop(experiment=experiment, now=NOW)
    late = NOW + timedelta(days=30)
    assert experiments_refresh(shop_id=shop.pk, now=late).results == 1
    assert ExperimentResult.objects.get(experiment=experiment).data["exposures"]["units"] == 0
    assert experiments_refresh(shop_id=shop.pk, now=late + timedelta(hours=1)).results == 0

    at = T0 + timedelta(hours=1)
    ingest(ingest_client, [exposure("v-1", "control", at), exposure("v-2", "b", at, n=1)])
    process_all(shop)
    refreshed = experiments_refresh(shop_id=shop.pk, now=late + timedelta(hours=2))

    assert refreshed.results == 1
    assert ExperimentResult.objects.get(experiment=experiment).data["exposures"]["units"] == 2
