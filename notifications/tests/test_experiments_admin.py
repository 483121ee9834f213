"""Experiments in the admin: created, edited, started and stopped through the services, the
services' errors shown on the form with nothing saved, variants editable only while draft."""

from datetime import UTC, datetime

import orjson
import pytest

from notifications.experiments import services
from notifications.experiments.rules import VariantIn
from notifications.models import Experiment, ExperimentPhase, Variant

EXPERIMENTS = "/admin/notifications/experiment/"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

pytestmark = pytest.mark.django_db


def form_data(shop, variants=(("control", "5", True), ("one-click", "3", False)), **fields):
    data = {
        "shop": shop.pk,
        "key": "checkout-button",
        "name": "Checkout button",
        "hypothesis": "One click sells more.",
        "unit": "person",
        "holdout_share": "0.1",
        "targeting": "{}",
        "primary_metric": orjson.dumps({"kind": "conversion"}).decode(),
        "secondary_metrics": "[]",
        "guardrail_metrics": '[{"kind": "bounce"}]',
        "winsor_percentile": "99.9",
        "is_sequential": "on",
        "planned_mde": "",
        "variants-TOTAL_FORMS": str(len(variants)),
        "variants-INITIAL_FORMS": "0",
        "variants-MIN_NUM_FORMS": "0",
        "variants-MAX_NUM_FORMS": "1000",
    }
    for index, (key, weight, is_control) in enumerate(variants):
        data[f"variants-{index}-key"] = key
        data[f"variants-{index}-weight"] = weight
        if is_control:
            data[f"variants-{index}-is_control"] = "on"
    return data | fields


def draft(shop, key="checkout-button"):
    return services.experiment_create(
        shop=shop,
        key=key,
        name=key,
        unit="person",
        primary_metric={"kind": "conversion"},
        variants=[VariantIn(key="control", weight=1, is_control=True), VariantIn("b", 1)],
    )


def test_adding_creates_a_draft_through_the_service(admin_client, shop):
    response = admin_client.post(f"{EXPERIMENTS}add/", form_data(shop))

    assert response.status_code == 302
    experiment = Experiment.objects.get()
    assert (experiment.shop, experiment.key, experiment.status, experiment.phase) == (
        shop,
        "checkout-button",
        "draft",
        0,
    )
    assert (experiment.live_key, experiment.guardrail_metrics) == (
        "checkout-button",
        [{"kind": "bounce"}],
    )
    assert [(v.key, v.weight, v.is_control, v.position) for v in experiment.variants.all()] == [
        ("control", 0.625, True, 0),
        ("one-click", 0.375, False, 1),
    ]


@pytest.mark.parametrize(
    ("fields", "variants", "field", "message"),
    [
        ({"primary_metric": '{"kind": "happiness"}'}, None, "primary_metric", "unknown metric"),
        ({"targeting": '{"device": ["fridge"]}'}, None, "targeting", "targeting.device"),
        ({"planned_mde": "-0.1"}, None, "planned_mde", "a positive relative effect"),
        ({}, (("a", "1", True), ("b", "1", True)), None, "exactly one control variant (got 2)"),
        ({}, (("a", "1", True), ("b", "0", False)), None, "weights must be positive numbers"),
    ],
)
def test_invalid_input_shows_the_services_errors_and_saves_nothing(
    admin_client, shop, fields, variants, field, message
):
    data = form_data(shop, **fields) if variants is None else form_data(shop, variants, **fields)

    response = admin_client.post(f"{EXPERIMENTS}add/", data)

    assert response.status_code == 200
    if field is None:
        errors = response.context["inline_admin_formsets"][0].formset.non_form_errors()
    else:
        errors = response.context["adminform"].form.errors[field]
    assert any(message in error for error in errors)
    assert (Experiment.objects.count(), Variant.objects.count()) == (0, 0)


def test_a_key_in_use_is_refused_on_the_form(admin_client, shop):
    draft(shop)

    response = admin_client.post(f"{EXPERIMENTS}add/", form_data(shop))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["key"] == [
        "in use by a draft or running experiment"
    ]
    assert Experiment.objects.count() == 1


def test_a_drafts_variants_are_edited_through_the_service(admin_client, shop):
    experiment = draft(shop)
    ids = [v.pk for v in experiment.variants.all()]
    data = form_data(shop, (("control", "1", True), ("b", "3", False)), name="Renamed")
    data.pop("shop")
    data["variants-INITIAL_FORMS"] = "2"
    data |= {f"variants-{i}-id": pk for i, pk in enumerate(ids)}

    response = admin_client.post(f"{EXPERIMENTS}{experiment.pk}/change/", data)

    assert response.status_code == 302
    experiment.refresh_from_db()
    assert (experiment.name, experiment.status, experiment.phase) == ("Renamed", "draft", 0)
    assert [(v.key, v.weight) for v in experiment.variants.all()] == [
        ("control", 0.25),
        ("b", 0.75),
    ]


def test_start_and_stop_actions_go_through_the_services(admin_client, shop):
    experiment = draft(shop)

    started = admin_client.post(
        EXPERIMENTS, {"action": "start", "_selected_action": [experiment.pk]}
    )
    experiment.refresh_from_db()
    status_after_start = (experiment.status, experiment.phase)
    again = admin_client.post(
        EXPERIMENTS, {"action": "start", "_selected_action": [experiment.pk]}, follow=True
    )
    stopped = admin_client.post(
        EXPERIMENTS, {"action": "stop", "_selected_action": [experiment.pk]}
    )
    experiment.refresh_from_db()

    assert (started.status_code, stopped.status_code) == (302, 302)
    assert status_after_start == ("running", 1)
    assert "checkout-button: The experiment is already running." in [
        str(m) for m in again.context["messages"]
    ]
    assert (experiment.status, experiment.live_key) == ("stopped", None)
    assert ExperimentPhase.objects.get(experiment=experiment).ended_at is not None


def test_a_running_experiment_shows_its_design_and_variants_read_only(admin_client, shop):
    experiment = services.experiment_start(experiment=draft(shop), now=T0)

    page = admin_client.get(f"{EXPERIMENTS}{experiment.pk}/change/").content.decode()

    assert 'name="name"' in page
    assert 'name="key"' not in page
    assert 'name="holdout_share"' not in page
    assert 'name="variants-0-weight"' not in page


def test_a_stopped_experiment_cannot_be_changed(admin_client, shop):
    experiment = services.experiment_stop(experiment=draft(shop), now=T0)
    data = form_data(shop, name="Renamed")

    response = admin_client.post(f"{EXPERIMENTS}{experiment.pk}/change/", data)

    assert response.status_code == 403
    experiment.refresh_from_db()
    assert experiment.name == "checkout-button"


def test_the_list_shows_the_status(admin_client, shop):
    services.experiment_start(experiment=draft(shop), now=T0)
    draft(shop, key="banner")

    page = admin_client.get(EXPERIMENTS).content.decode()

    assert page.count("Running") >= 1
    assert page.count("Draft") >= 1


def variant_rows(*rows):
    data = {
        "form-TOTAL_FORMS": str(len(rows)),
        "form-INITIAL_FORMS": "0",
        "form-MIN_NUM_FORMS": "0",
        "form-MAX_NUM_FORMS": "1000",
    }
    for index, (key, weight, is_control) in enumerate(rows):
        data |= {f"form-{index}-key": key, f"form-{index}-weight": weight}
        if is_control:
            data[f"form-{index}-is_control"] = "on"
    return data


def test_a_running_experiments_new_variants_start_a_phase(admin_client, shop):
    experiment = services.experiment_start(experiment=draft(shop), now=T0)
    url = f"{EXPERIMENTS}{experiment.pk}/variants/"

    change_page = admin_client.get(f"{EXPERIMENTS}{experiment.pk}/change/").content.decode()
    form_page = admin_client.get(url)
    response = admin_client.post(url, variant_rows(("control", "1", True), ("b", "3", False)))

    assert f'href="{url}"' in change_page
    assert form_page.status_code == 200
    assert response.status_code == 302
    experiment.refresh_from_db()
    assert experiment.phase == 2
    assert [(v.key, v.weight) for v in experiment.variants.all()] == [
        ("control", 0.25),
        ("b", 0.75),
    ]
    phases = ExperimentPhase.objects.filter(experiment=experiment).order_by("number")
    assert [
        (p.number, [(v["key"], v["weight"]) for v in p.variants], p.ended_at is None)
        for p in phases
    ] == [
        (1, [("control", 0.5), ("b", 0.5)], False),
        (2, [("control", 0.25), ("b", 0.75)], True),
    ]


def test_invalid_new_variants_are_shown_and_change_nothing(admin_client, shop):
    experiment = services.experiment_start(experiment=draft(shop), now=T0)

    response = admin_client.post(
        f"{EXPERIMENTS}{experiment.pk}/variants/",
        variant_rows(("control", "1", True), ("b", "1", True)),
    )

    assert response.status_code == 200
    assert "exactly one control variant (got 2)" in response.content.decode()
    experiment.refresh_from_db()
    assert experiment.phase == 1
    assert ExperimentPhase.objects.filter(experiment=experiment).count() == 1


def test_a_drafts_variants_page_is_refused(admin_client, shop):
    experiment = draft(shop)

    response = admin_client.get(f"{EXPERIMENTS}{experiment.pk}/variants/")

    assert response.status_code == 403
