"""The experiment endpoints: decide (write key, cached, invalidated on writes) and the CRUD API."""

import base64
from datetime import UTC, datetime
from unittest import mock

import pytest
from rest_framework.test import APIClient

from events.storefront_auth import identity_token_compute
from events.tests.factories import PersonFactory, PersonIdentifierFactory
from notifications.experiments import services
from notifications.experiments.assignment import Arm, variant_assign
from notifications.experiments.rules import VariantIn
from notifications.models import Experiment, ExperimentPhase, Variant
from notifications.tests.factories import ConversionScoreFactory, SessionFactory
from segments.models import Segment, SegmentMembership

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DECIDE = "/experiments/decide/"
WORKED_EXAMPLE_VARIANTS = [
    VariantIn(key="control", weight=5, is_control=True),
    VariantIn(key="one-click", weight=3),
    VariantIn(key="express", weight=2),
]


def running(shop, key="checkout-button", **overrides):
    arguments = {
        "shop": shop,
        "key": key,
        "name": key,
        "unit": "person",
        "primary_metric": {"kind": "conversion"},
        "variants": WORKED_EXAMPLE_VARIANTS,
        "holdout_share": 0.1,
    } | overrides
    experiment = services.experiment_create(**arguments)
    return services.experiment_start(experiment=experiment, now=T0)


def decide(shop, params, **headers):
    return APIClient().get(DECIDE, params, headers={"X-Write-Key": shop.write_key, **headers})


@pytest.mark.django_db
def test_decide_answers_the_documented_worked_example(shop):
    running(shop)
    token = identity_token_compute(shop=shop, user_id="customer-1042")

    answers = {
        anonymous_id: decide(shop, {"anonymous_id": anonymous_id}).json()
        for anonymous_id in ("visitor-2", "visitor-3", "visitor-21")
    }
    customer = decide(
        shop,
        {"anonymous_id": "visitor-2", "user_id": "customer-1042"},
        **{"X-Identity-Token": token},
    )

    assert answers == {
        "visitor-2": {"experiments": {"checkout-button": "one-click"}},
        "visitor-3": {"experiments": {"checkout-button": "express"}},
        "visitor-21": {"experiments": {"checkout-button": None}},
    }
    assert (customer.status_code, customer.json()) == (
        200,
        {"experiments": {"checkout-button": "control"}},
    )


@pytest.mark.django_db
def test_decide_agrees_with_the_python_assignment(shop):
    running(shop)
    arms = (Arm("control", 0.5), Arm("one-click", 0.3), Arm("express", 0.2))

    answers = [
        decide(shop, {"anonymous_id": f"a-{n}"}).json()["experiments"]["checkout-button"]
        for n in range(40)
    ]

    assert answers == [
        variant_assign(
            key="checkout-button", phase=1, unit_id=f"anon:a-{n}", arms=arms, holdout_share=0.1
        )
        for n in range(40)
    ]


@pytest.mark.django_db
def test_decide_lists_only_running_experiments(shop, other_shop):
    running(shop)
    draft = services.experiment_create(
        shop=shop,
        key="draft-one",
        name="Draft",
        unit="person",
        primary_metric={"kind": "conversion"},
        variants=WORKED_EXAMPLE_VARIANTS,
    )
    running(other_shop, key="elsewhere")
    stopped = running(shop, key="stopped-one")
    services.experiment_stop(experiment=stopped, now=T0)

    response = decide(shop, {"anonymous_id": "visitor-2"})

    assert response.json() == {"experiments": {"checkout-button": "one-click"}}
    assert draft.status == "draft"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Write-Key": "wrong"}, {"Authorization": "Bearer nope"}],
)
def test_decide_without_a_valid_write_key_is_401(shop, headers):
    running(shop)

    response = APIClient().get(DECIDE, {"anonymous_id": "visitor-2"}, headers=headers)

    assert (response.status_code, response.json()) == (
        401,
        {"code": "not_authenticated", "detail": "Unknown or missing write key.", "fields": {}},
    )


@pytest.mark.django_db
def test_decide_does_not_take_the_write_key_from_the_query_string(shop):
    running(shop)

    response = APIClient().get(DECIDE, {"anonymous_id": "visitor-2", "write_key": shop.write_key})

    assert response.status_code == 401


@pytest.mark.django_db
def test_decide_takes_the_write_key_as_the_basic_auth_user(shop):
    running(shop)
    basic = base64.b64encode(f"{shop.write_key}:".encode()).decode()

    response = APIClient().get(
        DECIDE, {"anonymous_id": "visitor-2"}, headers={"Authorization": f"Basic {basic}"}
    )

    assert response.json() == {"experiments": {"checkout-button": "one-click"}}


@pytest.mark.django_db
def test_decide_needs_an_id_and_a_token_for_a_user_id(shop):
    running(shop)

    no_id = decide(shop, {})
    bare_user = decide(shop, {"user_id": "customer-1042"})
    bad_token = decide(shop, {"user_id": "customer-1042"}, **{"X-Identity-Token": "00"})

    assert (no_id.status_code, no_id.json()["fields"]) == (400, {"anonymous_id": ["required"]})
    assert (bare_user.status_code, bare_user.json()["fields"]) == (403, {"user_id": ["unverified"]})
    assert bad_token.status_code == 403


@pytest.mark.django_db
def test_decide_applies_device_source_and_visitor_targeting_from_the_request(shop):
    running(shop, targeting={"device": ["mobile"], "source": ["newsletter"], "visitor": "new"})
    match = {"anonymous_id": "visitor-2", "device": "mobile", "source": "Newsletter"}

    answers = [
        decide(shop, match | {"visitor": "new"}).json()["experiments"]["checkout-button"],
        decide(shop, match | {"visitor": "returning"}).json()["experiments"]["checkout-button"],
        decide(shop, match | {"visitor": "new", "device": "desktop"}).json()["experiments"][
            "checkout-button"
        ],
        decide(shop, match).json()["experiments"]["checkout-button"],
    ]

    assert answers == ["one-click", None, None, None]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "value"), [("device", "7"), ("visitor", "Returning"), ("device", "tv")]
)
def test_decide_refuses_a_trait_targeting_does_not_know(shop, name, value):
    # Even with no experiment running: a wrong value is the caller's bug, not "no experiments".
    response = decide(shop, {"anonymous_id": "visitor-2", name: value})

    assert response.status_code == 400
    assert response.json()["fields"] == {name: [mock.ANY]}


@pytest.mark.django_db
def test_decide_looks_up_segment_and_score_targeting(shop):
    segment = Segment.objects.create(shop=shop, name="VIP")
    running(shop, targeting={"segment": segment.pk})
    running(shop, key="warm", targeting={"score_min": 0.2, "score_max": 0.6})
    member = PersonFactory(shop=shop)
    PersonIdentifierFactory(person=member, kind="anonymous_id", value="visitor-2")
    SegmentMembership.objects.create(segment=segment, person=member, since=T0)
    ConversionScoreFactory(session=SessionFactory(shop=shop, person=member), score=0.3)
    outsider = PersonFactory(shop=shop)
    PersonIdentifierFactory(person=outsider, kind="anonymous_id", value="visitor-3")
    ConversionScoreFactory(session=SessionFactory(shop=shop, person=outsider), score=0.9)

    member_answer = decide(shop, {"anonymous_id": "visitor-2"}).json()["experiments"]
    outsider_answer = decide(shop, {"anonymous_id": "visitor-3"}).json()["experiments"]
    unknown_answer = decide(shop, {"anonymous_id": "never-seen"}).json()["experiments"]

    assert member_answer["checkout-button"] == "one-click"
    assert member_answer["warm"] is not None
    assert outsider_answer == {"checkout-button": None, "warm": None}
    assert unknown_answer == {"checkout-button": None, "warm": None}


@pytest.mark.django_db
def test_a_session_experiment_needs_a_session_id(shop):
    running(shop, key="session-test", unit="session", holdout_share=0.0)

    without = decide(shop, {"anonymous_id": "visitor-2"}).json()
    with_session = decide(shop, {"anonymous_id": "visitor-2", "session_id": "s-1"}).json()

    assert without == {"experiments": {"session-test": None}}
    assert with_session["experiments"]["session-test"] in {"control", "one-click", "express"}


@pytest.mark.django_db
def test_decide_reads_the_cache_and_every_write_invalidates_it(
    shop, django_assert_num_queries, django_capture_on_commit_callbacks
):
    experiment = running(shop)
    decide(shop, {"anonymous_id": "visitor-2"})

    with django_assert_num_queries(0):
        cached = decide(shop, {"anonymous_id": "visitor-2"}).json()
    with django_capture_on_commit_callbacks(execute=True):
        services.experiment_variants_change(
            experiment=experiment,
            variants=[
                VariantIn(key="control", weight=1, is_control=True),
                VariantIn(key="one-click", weight=1),
            ],
            now=T0,
        )
    rephased = decide(shop, {"anonymous_id": "visitor-2"}).json()
    with django_capture_on_commit_callbacks(execute=True):
        services.experiment_stop(experiment=experiment, now=T0)
    stopped = decide(shop, {"anonymous_id": "visitor-2"}).json()

    assert cached == {"experiments": {"checkout-button": "one-click"}}
    assert rephased == {
        "experiments": {
            "checkout-button": variant_assign(
                key="checkout-button",
                phase=2,
                unit_id="anon:visitor-2",
                arms=(Arm("control", 0.5), Arm("one-click", 0.5)),
                holdout_share=0.1,
            )
        }
    }
    assert stopped == {"experiments": {}}


# --- the token-authenticated CRUD API ------------------------------------------------------------

BODY = {
    "key": "checkout-button",
    "name": "Checkout button",
    "unit": "person",
    "primary_metric": {"kind": "conversion"},
    "guardrail_metrics": [{"kind": "bounce"}],
    "variants": [
        {"key": "control", "weight": 1, "is_control": True},
        {"key": "one-click", "weight": 1},
    ],
}


@pytest.mark.django_db
def test_create_start_and_stop_through_the_api(api_client, shop):
    created = api_client.post("/experiments/", BODY, format="json")
    experiment_id = created.json()["id"]

    started = api_client.post(f"/experiments/{experiment_id}/start/")
    stopped = api_client.post(f"/experiments/{experiment_id}/stop/")
    restarted = api_client.post(f"/experiments/{experiment_id}/start/")

    assert created.status_code == 201
    assert created.json()["variants"] == [
        {"key": "control", "name": "", "weight": 0.5, "is_control": True},
        {"key": "one-click", "name": "", "weight": 0.5, "is_control": False},
    ]
    assert (created.json()["status"], created.json()["winsor_percentile"]) == ("draft", 99.9)
    assert (started.status_code, started.json()["status"], started.json()["phase"]) == (
        200,
        "running",
        1,
    )
    assert stopped.json()["status"] == "stopped"
    assert (restarted.status_code, restarted.json()) == (
        400,
        {
            "code": "invalid",
            "detail": "A stopped experiment cannot be started again; create a new one.",
            "fields": {"status": ["stopped"]},
        },
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"variants": [{"key": "control", "weight": 1, "is_control": True}]}, "variants"),
        (
            {
                "variants": [
                    {"key": "control", "weight": 1, "is_control": True},
                    {"key": "b", "weight": -2},
                ]
            },
            "variants",
        ),
        ({"primary_metric": {"kind": "ltv"}}, "primary_metric"),
        ({"holdout_share": 1}, "holdout_share"),
        ({"unit": "cookie"}, "unit"),
    ],
)
def test_api_rejects_invalid_experiments_with_the_envelope(api_client, shop, change, field):
    response = api_client.post("/experiments/", BODY | change, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert list(response.json()["fields"]) == [field]
    assert (Experiment.objects.count(), Variant.objects.count()) == (0, 0)


@pytest.mark.django_db
def test_api_refuses_an_overlapping_key(api_client, shop):
    api_client.post("/experiments/", BODY, format="json")

    response = api_client.post("/experiments/", BODY, format="json")

    assert (response.status_code, response.json()["code"]) == (400, "conflict")
    assert Experiment.objects.count() == 1


@pytest.mark.django_db
def test_patch_of_a_running_experiments_variants_starts_a_phase(api_client, shop):
    experiment_id = api_client.post("/experiments/", BODY, format="json").json()["id"]
    api_client.post(f"/experiments/{experiment_id}/start/")

    response = api_client.patch(
        f"/experiments/{experiment_id}/",
        {
            "variants": [
                {"key": "control", "weight": 3, "is_control": True},
                {"key": "one-click", "weight": 1},
            ]
        },
        format="json",
    )
    fixed = api_client.patch(f"/experiments/{experiment_id}/", {"unit": "session"}, format="json")

    assert (response.status_code, response.json()["phase"]) == (200, 2)
    assert [v["weight"] for v in response.json()["variants"]] == [0.75, 0.25]
    assert ExperimentPhase.objects.filter(experiment_id=experiment_id).count() == 2
    assert (fixed.status_code, fixed.json()["fields"]) == (400, {"unit": ["fixed while running"]})


@pytest.mark.django_db
def test_the_api_is_scoped_to_the_users_shop(api_client, shop, other_shop):
    theirs = running(other_shop, key="theirs")
    running(shop)

    listed = api_client.get("/experiments/")
    detail = api_client.get(f"/experiments/{theirs.pk}/")
    start = api_client.post(f"/experiments/{theirs.pk}/stop/")

    assert [e["key"] for e in listed.json()] == ["checkout-button"]
    assert (detail.status_code, start.status_code) == (404, 404)
    assert Experiment.objects.get(pk=theirs.pk).status == "running"


@pytest.mark.django_db
def test_the_list_costs_a_fixed_number_of_queries(api_client, shop, django_assert_num_queries):
    for n in range(3):
        running(shop, key=f"exp-{n}")

    with django_assert_num_queries(3):
        response = api_client.get("/experiments/")

    assert len(response.json()) == 3


@pytest.mark.django_db
def test_an_unknown_experiment_path_is_a_404_in_the_envelope(api_client, shop):
    response = api_client.get("/experiments/nope/")

    assert (response.status_code, response.json()) == (
        404,
        {"code": "not_found", "detail": "Not found.", "fields": {}},
    )


@pytest.mark.django_db
def test_the_api_needs_a_signed_in_user(shop):
    response = APIClient().get("/experiments/")

    assert response.status_code == 401


@pytest.mark.django_db
def test_segment_targeting_reads_the_person_and_the_targeted_membership_only(
    shop, django_assert_num_queries
):
    segment = Segment.objects.create(shop=shop, name="VIP")
    running(shop, targeting={"segment": segment.pk})
    member = PersonFactory(shop=shop)
    PersonIdentifierFactory(person=member, kind="anonymous_id", value="visitor-2")
    SegmentMembership.objects.create(segment=segment, person=member, since=T0)
    decide(shop, {"anonymous_id": "visitor-2"})

    with django_assert_num_queries(2):
        response = decide(shop, {"anonymous_id": "visitor-2"})

    assert response.json() == {"experiments": {"checkout-button": "one-click"}}
