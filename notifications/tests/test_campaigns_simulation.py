"""The simulator through a campaign: real decisions, the pending answer, the notification's
events, purchases with a true effect for those shown it, and the experiment's uplift interval
around that truth."""

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from events.models import Event, Order
from events.simulator import Simulator
from notifications.campaigns import services
from notifications.campaigns.rules import ContentIn
from notifications.campaigns.simulation import campaign_simulate
from notifications.fixed_model import fixed_model_activate, fixed_score
from notifications.models import CampaignDecision

START = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
END = START + timedelta(hours=1)
# Small enough for a test (the clock ticks every 2 simulated minutes); docs/campaigns.md has a
# larger run's figures.
VISITORS = 700
BAND = {"kind": "score_band", "low": 0.3, "high": 0.6}
CONTENT = ContentIn(
    key="nudge", title="Still deciding?", body="{product} is waiting", cta_url="/cart",
    cta_text="Back to cart",
)  # fmt: skip


def campaign_running(shop, *, now=START, **overrides):
    campaign = services.campaign_create(
        **{
            "shop": shop,
            "key": "nudge",
            "name": "Nudge",
            "trigger": BAND,
            "variants": [CONTENT],
            "holdout_share": 0.5,
            "now": now,
        }
        | overrides
    )
    return services.campaign_start(campaign=campaign, now=now)


def test_the_split_journey_is_the_whole_journey():
    whole, split = (
        Simulator(shop_domain="s.example", seed=3),
        Simulator(shop_domain="s.example", seed=3),
    )
    times = whole.visit_times(visits=200, start=START, end=END)
    assert times == split.visit_times(visits=200, start=START, end=END)

    journeys = [whole.journey(at) for at in times]
    halves = []
    for at in times:
        visit = split.visit_start(at)
        split.visit_end(visit)
        halves.append(visit.events)

    assert halves == journeys
    assert any(e["type"] == "purchase" for j in journeys for e in j)


def test_an_event_emitted_between_two_is_placed_in_time_order():
    simulator = Simulator(shop_domain="s.example", seed=3)
    visit = simulator.visit_start(START)
    while len(visit.events) < 3:
        visit = simulator.visit_start(START)
    first, second = (datetime.fromisoformat(e["timestamp"]) for e in visit.events[:2])
    clock = visit.clock

    visit.emit_at(first + (second - first) / 2, "notification_shown", "/")

    assert visit.events[1]["type"] == "notification_shown"
    stamps = [datetime.fromisoformat(e["timestamp"]) for e in visit.events]
    assert stamps == sorted(stamps)
    assert visit.clock == clock


@pytest.mark.django_db(transaction=True)
def test_a_simulated_campaign_measures_the_true_effect_of_the_notification(shop, tmp_path):
    fixed_model_activate(shop=shop, directory=tmp_path, now=START)
    campaign = campaign_running(shop)

    outcome = campaign_simulate(
        campaign=campaign,
        visitors=VISITORS,
        effect=1.0,
        start=START,
        end=END,
        seed=5,
        tick=timedelta(minutes=2),
    )

    decisions = {d.anonymous_id: d for d in CampaignDecision.objects.filter(campaign=campaign)}
    exposures = Event.objects.filter(shop=shop, type="experiment_exposure")
    shown = Event.objects.filter(shop=shop, type="notification_shown")
    # Every exposure is a decision of the real decision code, with its arm, once per browser.
    assert exposures.count() == sum(outcome.exposed.values()) > 150
    for event in exposures:
        decision = decisions[event.anonymous_id]
        assert event.properties == {
            "experiment": "campaign-nudge", "variant": decision.arm, "phase": 1,
        }  # fmt: skip
    # Only the content arm is shown anything; the decision's score was in the band when made.
    assert shown.count() == outcome.shown == outcome.exposed["nudge"]
    assert {e.properties["variant"] for e in shown} == {"nudge"}
    assert all(0.3 <= d.score <= 0.6 for d in decisions.values())
    assert {round(d.score, 4) for d in decisions.values()} <= {
        round(fixed_score(n), 4) for n in range(3, 10)
    }
    assert Event.objects.filter(shop=shop, type="notification_clicked").count() == outcome.clicked
    # The experiment's result: the treatment's uplift over the holdout, with the truth (+100 %)
    # inside its (sequential, so wide at this size) interval; the rates show the effect.
    document = outcome.result.data
    arms = {arm["variant"]: arm for arm in document["arms"]}
    assert {k: arms[k]["units"] for k in arms} == outcome.exposed
    assert {k: arms[k]["conversions"] for k in arms} == outcome.bought
    uplift = arms["nudge"]["metrics"][document["primary_metric"]]["relative"]
    assert uplift["ci_low"] <= 1.0 <= uplift["ci_high"]
    rates = {k: outcome.bought[k] / outcome.exposed[k] for k in outcome.exposed}
    assert rates["nudge"] > 1.5 * rates["holdout"]


@pytest.mark.django_db(transaction=True)
def test_the_demo_campaign_is_running_with_decisions_exposures_and_results(shop, tmp_path):
    fixed_model_activate(shop=shop, directory=tmp_path, now=timezone.now())
    arguments = ["--shop", shop.domain, "--visitors", "120", "--tick", "300"]

    call_command("demo_campaign", *arguments)
    call_command("demo_campaign", *arguments)  # the demo restarted: nothing sent twice
    finished = timezone.now()

    campaign = shop.campaigns.get()
    assert (campaign.key, campaign.status, campaign.experiment.status) == (
        "still-deciding", "running", "running",
    )  # fmt: skip
    assert campaign.trigger == {"kind": "score_band", "low": 0.15, "high": 0.6}
    assert [v["key"] for v in campaign.variants] == ["free-shipping", "ten-off"]
    arms = Counter(campaign.decisions.values_list("arm", flat=True))
    assert set(arms) == {"holdout", "free-shipping", "ten-off"}
    exposed = Counter(
        e.properties["variant"] for e in Event.objects.filter(type="experiment_exposure")
    )
    assert set(exposed) == set(arms)
    result = campaign.experiment.results.get()
    assert {a["variant"]: a["units"] for a in result.data["arms"]} == dict(exposed)
    # Every simulated visit ended before now: nothing is dated in the future.
    assert not Event.objects.filter(occurred_at__gt=finished).exists()
    assert not Order.objects.filter(placed_at__gt=finished).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("setup", "arguments", "message"),
    [
        ("none", ["--campaign", "nope"], "No campaign 'nope'"),
        ("draft", ["--campaign", "nudge"], "it is not running"),
        ("segment", ["--campaign", "nudge"], "segment triggers or targeting"),
        ("no model", ["--campaign", "nudge"], "no active conversion model"),
        ("young", ["--campaign", "nudge"], "less than 1 h"),
        ("running", ["--campaign", "nudge", "--effect", "-2"], "below -1"),
    ],
)
def test_the_command_refuses_what_it_cannot_simulate(shop, tmp_path, setup, arguments, message):
    now = timezone.now()
    if setup != "no model":
        shop.model_versions.create(version=99, path=str(tmp_path), trained_at=now, is_active=True)
    if setup == "draft":
        services.campaign_create(
            shop=shop, key="nudge", name="Nudge", trigger=BAND, variants=[CONTENT], now=now
        )
    elif setup == "segment":
        segment = shop.segments.create(name="VIP")
        campaign_running(shop, now=now - timedelta(hours=2), targeting={"segment": segment.pk})
    elif setup in ("no model", "running"):
        campaign_running(shop, now=now - timedelta(hours=2))
    elif setup == "young":
        campaign_running(shop, now=now)

    with pytest.raises(CommandError, match=message):
        call_command("simulate_campaign", "--shop", shop.domain, *arguments)
