"""Campaigns: the service's rules, the decisions (idempotent, capped, holdout, purchase, quiet
hours), the discount code claim, the pending endpoint and the CRUD API's rejections."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from events.follow_ups import follow_ups
from events.models import ConsentMode, Session, ShopMembership
from events.sessionize import NON_INTERACTION_TYPES
from events.tests.factories import EventFactory, PersonFactory, UserFactory
from notifications import tasks
from notifications.campaigns import decisions, rules, services
from notifications.campaigns.rules import ContentIn
from notifications.campaigns.selectors import score_band_default
from notifications.experiments import exposures
from notifications.experiments.assignment import Arm, unit_id_build, variant_assign
from notifications.experiments.rules import UnitTraits
from notifications.models import (
    Campaign,
    CampaignDecision,
    CampaignStatus,
    DiscountCode,
    Experiment,
    ExperimentExposure,
    ExperimentStatus,
)
from notifications.selectors import customer_profile_activity
from notifications.tests.factories import ConversionScoreFactory, SessionFactory
from segments.models import Segment

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=10)
PENDING = "/notifications/pending/"
HOSTILE = "<img src=x onerror=alert(1)>"
CONTENT = ContentIn(
    key="nudge",
    title="Hi {first_name}",
    body="{product} is waiting: {cart_value}",
    cta_url="https://shop.example/cart",
    cta_text="Back to cart",
)


def campaign_running(shop, *, key="nudge", holdout_share=0.1, **overrides):
    arguments = {
        "shop": shop,
        "key": key,
        "name": "Nudge",
        "trigger": {"kind": "score_band", "low": 0.2, "high": 0.6},
        "variants": [CONTENT],
        "holdout_share": holdout_share,
        "is_consent_required": False,
        "now": T0,
    } | overrides
    campaign = services.campaign_create(**arguments)
    return services.campaign_start(campaign=campaign, now=T0)


def live_session(shop, *, anonymous_id="anon-1", score=0.4, product=HOSTILE, now=NOW, **fields):
    person = PersonFactory(shop=shop, traits={"first_name": "Ada"})
    session = SessionFactory(
        shop=shop, person=person, started_at=now - timedelta(minutes=5), ended_at=now, **fields
    )
    EventFactory(
        shop=shop,
        session=session,
        person=person,
        anonymous_id=anonymous_id,
        type="add_to_cart",
        product_id="p1",
        product_name=product,
        product_price=Decimal("12.50"),
        product_quantity=2,
        occurred_at=now - timedelta(minutes=1),
    )
    if score is not None:
        ConversionScoreFactory(session=session, score=score, scored_at=now)
    return session


def arm_of(campaign, anonymous_id):
    experiment = campaign.experiment
    return variant_assign(
        key=experiment.key,
        phase=experiment.phase,
        unit_id=unit_id_build(unit="person", anonymous_id=anonymous_id),
        arms=tuple(Arm(v.key, v.weight) for v in experiment.variants.all()),
        holdout_share=0.0,
    )


def anonymous_ids_in(campaign, arm, count):
    found = (f"anon-{n}" for n in range(10000) if arm_of(campaign, f"anon-{n}") == arm)
    return [next(found) for _ in range(count)]


# --- pure rules -------------------------------------------------------------------------------


def test_text_render_fills_known_placeholders_once_as_plain_text():
    values = {"first_name": "{product}", "product": HOSTILE, "cart_value": "25.00 EUR"}

    text = rules.text_render("Hi {first_name}, {product} for {cart_value}", values)

    assert text == f"Hi {{product}}, {HOSTILE} for 25.00 EUR"


def test_placeholders_check_names_the_unknown_ones():
    assert rules.placeholders_check("{first_name} {firstname} {price}") == ["firstname", "price"]


def test_quiet_hours_wrap_midnight():
    hours = [h for h in range(24) if rules.is_quiet(local_hour=h, start=22, end=7)]

    assert hours == [0, 1, 2, 3, 4, 5, 6, 22, 23]
    assert not rules.is_quiet(local_hour=3, start=None, end=None)


def test_cta_url_with_code_keeps_the_query():
    url = rules.cta_url_with_code("https://s.example/cart?a=1", "SAVE 10&x")

    assert url == "https://s.example/cart?a=1&discount=SAVE+10%26x"


@pytest.mark.parametrize(
    ("trigger", "field"),
    [
        ({"kind": "score_band", "low": 0.5, "high": 0.5}, "trigger.high"),
        ({"kind": "score_band", "low": 0.2, "high": 1.5}, "trigger.high"),
        ({"kind": "cart_abandoned", "minutes": 0}, "trigger.minutes"),
        ({"kind": "product_viewed", "count": -1}, "trigger.count"),
        ({"kind": "teleported"}, "trigger"),
    ],
)
def test_trigger_validate_refuses(trigger, field):
    _, errors = rules.trigger_validate(trigger)

    assert field in errors


def facts(**overrides):
    values = {
        "traits": UnitTraits(score=0.3, segment_ids=frozenset({7}), device="mobile"),
        "country": "FR",
        "is_converted": False,
        "cart_value": Decimal("40.00"),
        "last_cart_at": None,
        "last_checkout_at": None,
        "max_product_views": 0,
        "urls": ("https://s.example/products/mug",),
        "is_first_visit": False,
    } | overrides
    return rules.SessionFacts(**values)


@pytest.mark.parametrize(
    ("trigger", "session", "reason"),
    [
        (
            {"kind": "cart_abandoned", "minutes": 15},
            {"last_cart_at": NOW - timedelta(minutes=15)},
            "cart idle for 15 minutes",
        ),
        (
            {"kind": "cart_abandoned", "minutes": 15},
            {"last_cart_at": NOW - timedelta(minutes=14)},
            None,
        ),
        (
            {"kind": "cart_abandoned", "minutes": 15},
            {"last_cart_at": NOW - timedelta(minutes=20), "last_checkout_at": NOW},
            None,
        ),
        (
            {"kind": "checkout_started"},
            {"last_checkout_at": NOW},
            "checkout started, not completed",
        ),
        ({"kind": "checkout_started"}, {}, None),
        (
            {"kind": "product_viewed", "count": 3},
            {"max_product_views": 3},
            "a product viewed 3 times",
        ),
        ({"kind": "product_viewed", "count": 3}, {"max_product_views": 2}, None),
        ({"kind": "segment_entered", "segment": 7}, {}, "in segment 7"),
        ({"kind": "segment_entered", "segment": 8}, {}, None),
        ({"kind": "first_visit"}, {"is_first_visit": True}, "first visit"),
        ({"kind": "first_visit"}, {}, None),
        ({"kind": "score_band", "low": 0.3, "high": 0.5}, {}, "score 0.300 in [0.300, 0.500]"),
        ({"kind": "score_band", "low": 0.31, "high": 0.5}, {}, None),
    ],
)
def test_trigger_fires(trigger, session, reason):
    assert rules.trigger_fires(trigger, facts(**session), now=NOW) == reason


@pytest.mark.parametrize(
    ("targeting", "admitted"),
    [
        ({}, True),
        ({"country": ["FR", "DE"]}, True),
        ({"country": ["DE"]}, False),
        ({"cart_value_min": 40, "cart_value_max": 60}, True),
        ({"cart_value_min": 40.01}, False),
        ({"url_contains": "/products/mug"}, True),
        ({"url_contains": "/products/cup"}, False),
        ({"device": ["mobile"], "segment": 7}, True),
        ({"device": ["desktop"]}, False),
    ],
)
def test_targeting_admits(targeting, admitted):
    cleaned, errors = rules.targeting_validate(targeting)

    assert errors == {}
    assert rules.targeting_admits(cleaned, facts()) is admitted


# --- services ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_campaign_create_makes_its_experiment_with_a_holdout_arm(shop):
    campaign = services.campaign_create(
        shop=shop,
        key="nudge",
        name="Nudge",
        trigger={"kind": "checkout_started"},
        variants=[CONTENT, ContentIn(key="plain", title="Hi", body="Come back", cta_url="/cart")],
        holdout_share=0.2,
        now=T0,
    )

    arms = [(v.key, round(v.weight, 6), v.is_control) for v in campaign.experiment.variants.all()]
    assert (campaign.status, campaign.experiment.key) == ("draft", "campaign-nudge")
    assert arms == [("holdout", 0.2, True), ("nudge", 0.4, False), ("plain", 0.4, False)]
    assert campaign.experiment.holdout_share == 0.0


@pytest.mark.django_db
def test_score_band_defaults_to_the_shops_50th_to_90th_percentile(shop):
    for n in range(100):
        ConversionScoreFactory(session=SessionFactory(shop=shop), score=n / 100, scored_at=T0)

    campaign = services.campaign_create(
        shop=shop,
        key="band",
        name="Band",
        trigger={"kind": "score_band"},
        variants=[CONTENT],
        now=T0 + timedelta(hours=1),
    )

    # numpy's linear percentile of 0.00..0.99: 0.495 and 0.891.
    assert campaign.trigger == {"kind": "score_band", "low": 0.495, "high": 0.891}
    assert score_band_default(shop=shop, now=T0 + timedelta(days=30)).sample_size == 0


@pytest.mark.django_db
def test_start_pause_stop_drive_the_experiment(shop):
    campaign = campaign_running(shop)

    paused = services.campaign_pause(campaign=campaign, now=NOW)
    restarted = services.campaign_start(campaign=paused, now=NOW)
    stopped = services.campaign_stop(campaign=restarted, now=NOW)

    experiment = Experiment.objects.get(pk=campaign.experiment_id)
    assert (paused.status, restarted.status, stopped.status) == ("paused", "running", "stopped")
    assert (experiment.status, experiment.phase) == (ExperimentStatus.STOPPED, 1)


# --- decisions --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_decisions_are_stored_once_with_rendered_text(shop):
    campaign = campaign_running(shop)
    (anonymous_id,) = anonymous_ids_in(campaign, "nudge", 1)
    session = live_session(shop, anonymous_id=anonymous_id)

    first = decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    again = decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW + timedelta(seconds=5))

    decision = CampaignDecision.objects.get()
    assert (first.decisions, again.decisions) == (1, 0)
    assert (decision.session_id, decision.arm, decision.is_holdout, decision.score) == (
        session.pk,
        "nudge",
        False,
        0.4,
    )
    assert decision.reason == "score 0.400 in [0.200, 0.600]"
    assert (decision.title, decision.body) == ("Hi Ada", f"{HOSTILE} is waiting: 25.00 USD")


@pytest.mark.django_db
def test_sessions_outside_the_band_purchased_or_in_quiet_hours_get_nothing(shop):
    campaign_running(shop, key="quiet", quiet_start_hour=12, quiet_end_hour=13)
    campaign_running(shop, key="open")
    live_session(shop, anonymous_id="a-low", score=0.1)
    live_session(shop, anonymous_id="a-bought", is_converted=True)
    bought = live_session(shop, anonymous_id="a-bought-unflagged")
    EventFactory(
        shop=shop, session=bought, type="purchase", occurred_at=NOW - timedelta(seconds=30)
    )

    result = decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)

    assert result.decisions == 0
    assert CampaignDecision.objects.count() == 0


@pytest.mark.django_db
def test_holdout_is_decided_and_stored_but_shown_nothing(shop):
    # The endpoint reads the clock: the session is live now.
    now = timezone.now()
    campaign = campaign_running(shop, holdout_share=0.5)
    (held,) = anonymous_ids_in(campaign, "holdout", 1)
    live_session(shop, anonymous_id=held, now=now)
    DiscountCode.objects.create(campaign=campaign, code="SAVE10")

    result = decisions.campaign_decisions_run(shop_id=shop.pk, now=now)
    answer = APIClient().get(
        PENDING, {"anonymous_id": held}, headers={"X-Write-Key": shop.write_key}
    )

    decision = CampaignDecision.objects.get()
    assert (result.decisions, result.holdout) == (1, 1)
    assert (decision.is_holdout, decision.title, decision.discount_code) == (True, "", "")
    assert answer.json()["notification"] is None
    assert answer.json()["exposure"] == {
        "experiment": "campaign-nudge",
        "variant": "holdout",
        "phase": 1,
    }
    assert DiscountCode.objects.get().claimed_unit_id is None


@pytest.mark.django_db
def test_one_decision_per_session_across_campaigns_and_per_person_day_cap(shop):
    campaign_running(shop, key="first", holdout_share=0.01)
    campaign_running(shop, key="second", holdout_share=0.01)
    session = live_session(shop, anonymous_id="a-1")
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)
    later = SessionFactory(
        shop=shop,
        person=session.person,
        started_at=NOW + timedelta(hours=2),
        ended_at=NOW + timedelta(hours=2, minutes=5),
    )
    ConversionScoreFactory(session=later, score=0.3, scored_at=later.ended_at)
    EventFactory(shop=shop, session=later, anonymous_id="a-1", occurred_at=later.ended_at)

    result = decisions.campaign_decisions_run(shop_id=shop.pk, now=later.ended_at)

    rows = list(CampaignDecision.objects.values_list("campaign__key", "session_id"))
    # The first campaign took the session; a day later the cap of 1 per person still holds for
    # it, so only the second campaign decides the later session.
    assert rows == [("second", later.pk), ("first", session.pk)]
    assert result.decisions == 1


@pytest.mark.django_db
def test_each_person_claims_one_unique_code(shop):
    campaign = campaign_running(shop, holdout_share=0.01)
    services.discount_codes_upload(campaign=campaign, codes=["A1", "B2", "A1"])
    ids = anonymous_ids_in(campaign, "nudge", 3)
    for anonymous_id in ids:
        live_session(shop, anonymous_id=anonymous_id)

    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)

    codes = sorted(CampaignDecision.objects.values_list("discount_code", flat=True))
    assert codes == ["", "A1", "B2"]
    claimed = DiscountCode.objects.exclude(claimed_unit_id=None)
    assert sorted(claimed.values_list("claimed_unit_id", flat=True)) == sorted(
        f"anon:{a}" for a in ids if CampaignDecision.objects.get(anonymous_id=a).discount_code
    )
    url = CampaignDecision.objects.get(discount_code="A1").cta_url
    assert url == "https://shop.example/cart?discount=A1"


# --- pending endpoint -------------------------------------------------------------------------


@pytest.mark.django_db
def test_pending_serves_the_decision_and_is_invalidated_by_a_new_one(
    shop, django_capture_on_commit_callbacks
):
    # The endpoint reads the clock: the session is live now.
    now = timezone.now()
    campaign = campaign_running(shop, holdout_share=0.01)
    (anonymous_id,) = anonymous_ids_in(campaign, "nudge", 1)
    client = APIClient()
    ask = lambda **extra: client.get(  # noqa: E731
        PENDING, {"anonymous_id": anonymous_id, **extra}, headers={"X-Write-Key": shop.write_key}
    )
    before = ask().json()
    live_session(shop, anonymous_id=anonymous_id, now=now)

    with django_capture_on_commit_callbacks(execute=True):
        decisions.campaign_decisions_run(shop_id=shop.pk, now=now)
    after = ask().json()
    with django_capture_on_commit_callbacks(execute=True):
        services.campaign_stop(campaign=campaign, now=now)
    stopped = ask().json()

    assert before == {"notification": None, "exposure": None}
    assert after["notification"] == {
        "title": "Hi Ada",
        "body": f"{HOSTILE} is waiting: 25.00 USD",
        "cta_url": "https://shop.example/cart",
        "cta_text": "Back to cart",
    }
    assert after["exposure"] == {"experiment": "campaign-nudge", "variant": "nudge", "phase": 1}
    assert stopped == {"notification": None, "exposure": None}


@pytest.mark.django_db
def test_pending_needs_consent_when_the_campaign_requires_it(shop):
    # The endpoint reads the clock: the session is live now.
    now = timezone.now()
    campaign = campaign_running(shop, holdout_share=0.01, is_consent_required=True)
    (anonymous_id,) = anonymous_ids_in(campaign, "nudge", 1)
    live_session(shop, anonymous_id=anonymous_id, now=now)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=now)
    client = APIClient()
    headers = {"X-Write-Key": shop.write_key}

    without = client.get(PENDING, {"anonymous_id": anonymous_id}, headers=headers).json()
    given = client.get(PENDING, {"anonymous_id": anonymous_id, "consent": "1"}, headers=headers)

    assert without == {"notification": None, "exposure": None}
    assert given.json()["notification"]["title"] == "Hi Ada"


@pytest.mark.django_db
def test_pending_needs_consent_when_the_shop_requires_it(shop):
    now = timezone.now()
    shop.consent_mode = ConsentMode.REQUIRED
    shop.save()
    campaign = campaign_running(shop, holdout_share=0.01, is_consent_required=False)
    (anonymous_id,) = anonymous_ids_in(campaign, "nudge", 1)
    live_session(shop, anonymous_id=anonymous_id, now=now)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=now)
    headers = {"X-Write-Key": shop.write_key}

    without = APIClient().get(PENDING, {"anonymous_id": anonymous_id}, headers=headers).json()

    assert without == {"notification": None, "exposure": None}


@pytest.mark.django_db
def test_campaign_list_counts_the_code_pools_in_a_fixed_number_of_queries(
    api_client, shop, django_assert_num_queries
):
    for key in ("one", "two", "three"):
        campaign = services.campaign_create(
            shop=shop,
            key=key,
            name=key,
            trigger={"kind": "first_visit"},
            variants=[CONTENT],
            now=T0,
        )
        services.discount_codes_upload(campaign=campaign, codes=[f"{key}-1", f"{key}-2"])

    # The shop (membership checked in the same query) and the annotated campaigns.
    with django_assert_num_queries(2):
        response = api_client.get(f"/notifications/campaigns/?shop={shop.domain}")

    assert [c["discount_codes"] for c in response.json()] == [{"total": 2, "free": 2}] * 3


@pytest.mark.django_db
def test_pending_refuses_without_write_key_or_anonymous_id(shop):
    client = APIClient()

    no_key = client.get(PENDING, {"anonymous_id": "a"})
    no_id = client.get(PENDING, headers={"X-Write-Key": shop.write_key})

    assert (no_key.status_code, no_key.json()["code"]) == (401, "not_authenticated")
    assert (no_id.status_code, no_id.json()["fields"]) == (400, {"anonymous_id": ["required"]})


# --- CRUD API ---------------------------------------------------------------------------------


def body(**overrides):
    return {
        "key": "nudge",
        "name": "Nudge",
        "trigger": {"kind": "score_band", "low": 0.2, "high": 0.6},
        "variants": [
            {
                "key": "nudge",
                "title": "Hi {first_name}",
                "body": "Still thinking about {product}?",
                "cta_url": "https://shop.example/cart",
            }
        ],
    } | overrides


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"trigger": {"kind": "score_band", "low": 0.6, "high": 0.2}}, "trigger.high"),
        ({"targeting": {"segment": 999999}}, "targeting.segment"),
        ({"trigger": {"kind": "segment_entered", "segment": 999999}}, "trigger.segment"),
        (
            {
                "variants": [
                    {"key": "v", "title": "Hi {name}", "body": "b", "cta_url": "/cart"},
                ]
            },
            "variants[0].title",
        ),
        (
            {"variants": [{"key": "v", "title": "t", "body": "b", "cta_url": "javascript:x"}]},
            "variants[0].cta_url",
        ),
        ({"max_per_person_day": 0}, "max_per_person_day"),
        ({"max_per_person_week": -2}, "max_per_person_week"),
        ({"holdout_share": 0}, "holdout_share"),
        ({"quiet_start_hour": 22}, "quiet_start_hour"),
        ({"targeting": {"country": ["France"]}}, "targeting.country"),
        ({"channel": "sms"}, "channel"),
        ({"variants": []}, "variants"),
    ],
)
def test_create_rejections_answer_400_and_save_nothing(api_client, shop, overrides, field):
    response = api_client.post(
        f"/notifications/campaigns/?shop={shop.domain}", body(**overrides), format="json"
    )

    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert field in response.json()["fields"]
    assert (Campaign.objects.count(), Experiment.objects.count()) == (0, 0)


@pytest.mark.django_db
def test_api_create_start_pause_stop_and_upload_codes(api_client, shop):
    segment = Segment.objects.create(shop=shop, name="VIP", rules={})
    base = "/notifications/campaigns/"

    created = api_client.post(
        f"{base}?shop={shop.domain}", body(targeting={"segment": segment.pk}), format="json"
    )
    cid = created.json()["id"]
    codes = api_client.post(
        f"{base}{cid}/codes/?shop={shop.domain}", {"codes": ["X1", "X2"]}, format="json"
    )
    started = api_client.post(f"{base}{cid}/start/?shop={shop.domain}")
    patched = api_client.patch(
        f"{base}{cid}/?shop={shop.domain}", {"max_per_person_day": 2}, format="json"
    )
    fixed = api_client.patch(f"{base}{cid}/?shop={shop.domain}", {"key": "x"}, format="json")
    paused = api_client.post(f"{base}{cid}/pause/?shop={shop.domain}")
    stopped = api_client.post(f"{base}{cid}/stop/?shop={shop.domain}")
    again = api_client.post(f"{base}{cid}/start/?shop={shop.domain}")
    listed = api_client.get(f"{base}?shop={shop.domain}")

    assert created.status_code == 201
    assert created.json()["experiment"]["key"] == "campaign-nudge"
    assert codes.json() == {"added": 2}
    assert (started.json()["status"], patched.json()["max_per_person_day"]) == ("running", 2)
    assert (fixed.status_code, fixed.json()["fields"]) == (400, {"key": ["fixed after creation"]})
    assert (paused.json()["status"], stopped.json()["status"]) == ("paused", "stopped")
    assert again.status_code == 400
    assert [c["discount_codes"] for c in listed.json()] == [{"total": 2, "free": 2}]
    assert Campaign.objects.get().status == CampaignStatus.STOPPED


@pytest.mark.django_db
def test_api_is_shop_scoped(api_client, shop, other_shop):
    theirs = campaign_running(other_shop)

    response = api_client.get(f"/notifications/campaigns/{theirs.pk}/?shop={shop.domain}")
    anonymous = APIClient().get(f"/notifications/campaigns/?shop={shop.domain}")

    assert response.status_code == 404
    assert anonymous.status_code in (401, 403)


@pytest.mark.django_db
def test_an_analyst_reads_campaigns_but_every_change_answers_403_and_changes_nothing(shop):
    campaign = campaign_running(shop)
    analyst = UserFactory()
    ShopMembership.objects.create(shop=shop, user=analyst, role=ShopMembership.Role.ANALYST)
    client = APIClient()
    client.force_authenticate(user=analyst)
    base, query = "/notifications/campaigns/", f"?shop={shop.domain}"

    reads = [
        client.get(f"{base}{query}").status_code,
        client.get(f"{base}{campaign.pk}/{query}").status_code,
        client.get(f"{base}{campaign.pk}/deliveries/{query}").status_code,
    ]
    changes = [
        client.post(f"{base}{query}", body(key="other"), format="json"),
        client.patch(f"{base}{campaign.pk}/{query}", {"name": "Mine"}, format="json"),
        client.post(f"{base}{campaign.pk}/pause/{query}"),
        client.post(f"{base}{campaign.pk}/stop/{query}"),
        client.post(f"{base}{campaign.pk}/codes/{query}", {"codes": ["X1"]}, format="json"),
        client.post(f"{base}pause-all/{query}"),
    ]

    assert reads == [200, 200, 200]
    assert {(r.status_code, r.json()["code"]) for r in changes} == {(403, "permission_denied")}
    assert changes[0].json()["detail"] == "Only the shop's owners may change campaigns."
    campaign.refresh_from_db()
    assert (campaign.name, campaign.status) == ("Nudge", CampaignStatus.RUNNING)
    assert list(Campaign.objects.values_list("key", flat=True)) == ["nudge"]
    assert not DiscountCode.objects.exists()


@pytest.mark.django_db
def test_pause_all_pauses_every_running_campaign_and_voids_what_is_pending(
    api_client, shop, other_shop, django_capture_on_commit_callbacks
):
    now = timezone.now()
    first = campaign_running(shop, holdout_share=0.01)
    (anonymous_id,) = anonymous_ids_in(first, "nudge", 1)
    live_session(shop, anonymous_id=anonymous_id, now=now)
    with django_capture_on_commit_callbacks(execute=True):
        decisions.campaign_decisions_run(shop_id=shop.pk, now=now)
    second = campaign_running(shop, key="second")
    draft = services.campaign_create(
        shop=shop, key="draft", name="Draft", trigger={"kind": "first_visit"},
        variants=[CONTENT], now=T0,
    )  # fmt: skip
    stopped = services.campaign_stop(campaign=campaign_running(shop, key="old"), now=T0)
    theirs = campaign_running(other_shop)
    ask = lambda: APIClient().get(  # noqa: E731
        PENDING, {"anonymous_id": anonymous_id}, headers={"X-Write-Key": shop.write_key}
    )
    before = ask().json()["notification"]

    with django_capture_on_commit_callbacks(execute=True):
        paused = api_client.post(f"/notifications/campaigns/pause-all/?shop={shop.domain}")
    again = api_client.post(f"/notifications/campaigns/pause-all/?shop={shop.domain}")
    later = decisions.campaign_decisions_run(shop_id=shop.pk, now=now)

    assert before is not None
    assert paused.status_code == 200
    assert [(c["key"], c["status"]) for c in paused.json()] == [
        ("nudge", "paused"), ("second", "paused"),
    ]  # fmt: skip
    assert again.json() == []
    statuses = dict(Campaign.objects.values_list("pk", "status"))
    assert (statuses[first.pk], statuses[second.pk]) == ("paused", "paused")
    assert (statuses[draft.pk], statuses[stopped.pk], statuses[theirs.pk]) == (
        "draft", "stopped", "running",
    )  # fmt: skip
    assert ask().json() == {"notification": None, "exposure": None}
    assert later.campaigns == 0
    # Paused, not stopped: the owner starts a campaign again and it decides as before.
    assert services.campaign_start(campaign=first, now=now).status == CampaignStatus.RUNNING


# --- wiring -----------------------------------------------------------------------------------


def test_campaigns_are_decided_after_the_live_scores_and_on_the_live_queue(settings, monkeypatch):
    """process_events runs the decisions after the scores; on a worker the scores' task sends
    them once it has scored; both run on the live queue, away from the analytics stages."""
    stages = [follow_up.stage for follow_up in follow_ups()]
    by_stage = {follow_up.stage: follow_up for follow_up in follow_ups()}
    sent = []
    monkeypatch.setattr(tasks.services, "scores_refresh", lambda **kwargs: 0)
    monkeypatch.setattr(tasks.campaign_decisions_task, "delay", sent.append)
    settings.CELERY_TASK_ALWAYS_EAGER = True  # no waiting mark: sent every time

    tasks.scores_refresh_task.apply(args=[41], throw=True)

    assert stages.index("live scores") < stages.index("campaigns")
    assert by_stage["campaigns"].task_path == "notifications.tasks.campaign_decisions_task"
    assert sent == [41]
    live = {"queue": settings.CELERY_LIVE_QUEUE}
    for name in (tasks.scores_refresh_task.name, tasks.campaign_decisions_task.name):
        assert settings.CELERY_TASK_ROUTES[name] == live
    assert settings.CELERY_TASK_ROUTES["events.tasks.events_process_task"] == live
    assert tasks.experiments_refresh_task.name not in settings.CELERY_TASK_ROUTES


@pytest.mark.django_db
def test_the_sweep_decides_every_shop_with_a_running_campaign(
    shop, other_shop, settings, celery_eager
):
    campaign_running(shop)
    services.campaign_pause(campaign=campaign_running(other_shop), now=NOW)
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}

    swept = tasks.campaign_decisions_sweep_task.apply().result

    assert "notifications.tasks.campaign_decisions_sweep_task" in scheduled
    assert swept == 1


def test_a_shown_toast_is_not_a_shopper_interaction():
    assert "notification_shown" in NON_INTERACTION_TYPES
    assert "notification_clicked" not in NON_INTERACTION_TYPES


@pytest.mark.django_db
def test_deleting_the_shop_deletes_its_campaigns_and_decisions(shop):
    campaign_running(shop)
    live_session(shop)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)

    shop.delete()

    assert (Campaign.objects.count(), CampaignDecision.objects.count()) == (0, 0)


@pytest.mark.django_db
def test_pending_never_answers_with_another_shops_decision(shop, other_shop):
    now = timezone.now()
    campaign = campaign_running(other_shop, holdout_share=0.01)
    (anonymous_id,) = anonymous_ids_in(campaign, "nudge", 1)
    live_session(other_shop, anonymous_id=anonymous_id, now=now)
    decisions.campaign_decisions_run(shop_id=other_shop.pk, now=now)

    mine = APIClient().get(
        PENDING, {"anonymous_id": anonymous_id}, headers={"X-Write-Key": shop.write_key}
    )

    assert CampaignDecision.objects.count() == 1
    assert mine.json() == {"notification": None, "exposure": None}


@pytest.mark.django_db
def test_the_snippets_events_become_the_experiments_exposures(shop, ingest_client, process_all):
    campaign = campaign_running(shop, holdout_share=0.5)
    at = T0 + timedelta(hours=1)

    def sent(visitor, kind, n=0, **properties):
        return {
            "event_id": f"{visitor}-{kind}-{n}",
            "type": kind,
            "anonymous_id": visitor,
            "timestamp": (at + timedelta(seconds=n)).isoformat(),
            "properties": properties,
        }

    exposure = {"experiment": campaign.experiment.key, "phase": 1}
    batch = [
        sent("v-held", "page_view"),
        sent("v-held", "experiment_exposure", 1, variant="holdout", **exposure),
        sent("v-shown", "page_view"),
        sent("v-shown", "experiment_exposure", 1, variant="nudge", **exposure),
        sent("v-shown", "notification_shown", 2, campaign="nudge", decision=1, variant="nudge"),
    ]
    response = ingest_client.post("/events/", {"batch": batch})
    process_all(shop)

    exposures.exposures_extract(shop_id=shop.pk, now=at + timedelta(hours=1))

    assert response.json()["rejected"] == []
    assert sorted(
        ExperimentExposure.objects.filter(experiment=campaign.experiment).values_list(
            "unit_id", "variant", "is_outside_targeting"
        )
    ) == [("anon:v-held", "holdout", False), ("anon:v-shown", "nudge", False)]
    # A page view, an exposure and a shown toast: still a bounce (no shopper interaction).
    assert list(Session.objects.filter(shop=shop).values_list("is_bounce", flat=True)) == [
        True,
        True,
    ]


@pytest.mark.django_db
def test_admin_lists_campaigns_and_decisions_and_acts_through_the_services(admin_client, shop):
    campaign = services.campaign_create(
        shop=shop,
        key="nudge",
        name="Nudge",
        trigger={"kind": "first_visit"},
        variants=[CONTENT],
        now=T0,
    )
    changelist = "/admin/notifications/campaign/"

    listed = admin_client.get(changelist)
    decisions_page = admin_client.get("/admin/notifications/campaigndecision/")
    started = admin_client.post(changelist, {"action": "start", "_selected_action": [campaign.pk]})
    status_after_start = Campaign.objects.get().status
    again = admin_client.post(
        changelist, {"action": "start", "_selected_action": [campaign.pk]}, follow=True
    )
    admin_client.post(changelist, {"action": "stop", "_selected_action": [campaign.pk]})
    add = admin_client.get(f"{changelist}add/")

    assert (listed.status_code, decisions_page.status_code, started.status_code) == (200, 200, 302)
    assert status_after_start == "running"
    assert "nudge: The campaign is already running." in [str(m) for m in again.context["messages"]]
    assert (Campaign.objects.get().status, Campaign.objects.get().experiment.status) == (
        "stopped",
        "stopped",
    )
    assert add.status_code == 403


@pytest.mark.django_db
def test_a_customer_profile_lists_the_notifications_decided_for_the_person(shop):
    campaign = campaign_running(shop, holdout_share=0.5)
    (shown,) = anonymous_ids_in(campaign, "nudge", 1)
    (held,) = anonymous_ids_in(campaign, "holdout", 1)
    shown_session = live_session(shop, anonymous_id=shown)
    held_session = live_session(shop, anonymous_id=held)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)

    seen = customer_profile_activity(shop=shop, person_id=shown_session.person_id)
    kept_out = customer_profile_activity(shop=shop, person_id=held_session.person_id)

    assert [
        (n["arm"], n["is_holdout"], n["title"], n["session_id"]) for n in seen["notifications"]
    ] == [("nudge", False, "Hi Ada", shown_session.pk)]
    assert [(n["arm"], n["is_holdout"], n["title"]) for n in kept_out["notifications"]] == [
        ("holdout", True, "")
    ]


def test_the_score_band_span_holds_every_band_only_when_every_trigger_is_a_band():
    bands = [
        {"kind": "score_band", "low": 0.2, "high": 0.4},
        {"kind": "score_band", "low": 0.3, "high": 0.7},
    ]
    assert rules.score_band_span(bands) == (0.2, 0.7)
    assert rules.score_band_span([*bands, {"kind": "first_visit"}]) is None
    assert rules.score_band_span([]) is None


@pytest.mark.django_db
def test_with_score_bands_only_the_sessions_scored_in_a_band_are_read(shop):
    campaign_running(shop)  # band [0.2, 0.6]
    live_session(shop, anonymous_id="a-in", score=0.4)
    live_session(shop, anonymous_id="a-edge", score=0.6)
    live_session(shop, anonymous_id="a-low", score=0.1)
    live_session(shop, anonymous_id="a-high", score=0.9)

    result = decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)

    assert (result.sessions, result.decisions) == (2, 2)
    assert set(CampaignDecision.objects.values_list("anonymous_id", flat=True)) == {
        "a-in",
        "a-edge",
    }


@pytest.mark.django_db
def test_no_decision_for_a_person_tagged_as_a_bot(shop):
    from analytics.models import BotTag

    campaign_running(shop)
    live_session(shop, anonymous_id="a-human", score=0.4)
    bot = live_session(shop, anonymous_id="a-bot", score=0.4)
    BotTag.objects.create(
        shop=shop, person_id=bot.person_id, first_at=NOW, last_at=NOW, tagged_at=NOW
    )

    result = decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)

    assert (result.sessions, result.decisions) == (1, 1)
    assert list(CampaignDecision.objects.values_list("anonymous_id", flat=True)) == ["a-human"]


@pytest.mark.django_db
def test_with_another_trigger_every_live_session_is_read(shop):
    campaign_running(shop)
    campaign_running(shop, key="first", trigger={"kind": "first_visit"})
    live_session(shop, anonymous_id="a-low", score=0.1)

    result = decisions.campaign_decisions_run(shop_id=shop.pk, now=NOW)

    assert result.sessions == 1


@pytest.mark.django_db
def test_a_decision_whose_visit_bought_since_is_not_served(shop):
    now = timezone.now()
    campaign_running(shop)
    session = live_session(shop, anonymous_id="a-1", score=0.4, now=now)
    decisions.campaign_decisions_run(shop_id=shop.pk, now=now)
    assert CampaignDecision.objects.count() == 1
    Session.objects.filter(pk=session.pk).update(is_converted=True)  # the pipeline saw the order
    services.campaign_pause(campaign=Campaign.objects.get(), now=now)  # (voids cached answers)
    services.campaign_start(campaign=Campaign.objects.get(), now=now)

    answer = APIClient().get(
        PENDING, {"anonymous_id": "a-1"}, headers={"X-Write-Key": shop.write_key}
    )

    assert answer.json() == {"notification": None, "exposure": None}
