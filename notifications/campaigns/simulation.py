"""A campaign as the traffic simulator runs it: simulated shoppers go through the real ingestion,
pipeline, live scores and decisions, ask the real pending answer, see the notification (or, in
the holdout, nothing) and buy with a true effect set by the caller.

The clock is simulated: a tick (`TICK`, a minute) sends every event whose time has come through
`events_ingest` (received then), then runs what a worker runs after the settle wait, at that
time: `events_process` until caught up, `scores_refresh`, `campaign_decisions_run`. Every
shopper still browsing then asks `notification_pending` for their anonymous id, as the snippet
polls; an answer with an exposure sends `experiment_exposure` (the holdout's too) and, with a
notification, `notification_shown` and maybe `notification_clicked` or `notification_dismissed`,
as the snippet does. A shopper who has sent their last product view decides whether to buy
(`Simulator.visit_end`): the chance is multiplied by `1 + effect` when a notification was shown
before, and is unchanged otherwise (the holdout, the undecided, a notification that came after).
So the truth is the effect on the visits shown a notification, which is what the campaign's
experiment measures (treatment arms against the holdout, among the exposed).

Nothing is decided here: the decisions, arms and texts are the decision code's, the exposures
the experiment code's from the events. docs/campaigns.md, "Simulating a campaign".
"""

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db.models import Count

from events.models import Shop
from events.services.ingest import PROCESS_DEBOUNCE_SECONDS, events_ingest
from events.services.pipeline import events_process
from events.simulator import Simulator, Visit
from notifications import services as score_services
from notifications.campaigns.decisions import campaign_decisions_run
from notifications.campaigns.selectors import notification_pending
from notifications.experiments.exposures import exposures_extract
from notifications.experiments.results import experiment_results_compute
from notifications.models import Campaign, CampaignChannel, CampaignStatus, ExperimentResult

TICK = timedelta(minutes=1)
# A shopper reacts to a notification within this, and decides about buying after it.
REACTION = timedelta(seconds=10)
# Of the shoppers shown a notification: this share clicks it, this share of the others closes it.
CLICK_SHARE = 0.15
DISMISS_SHARE = 0.4
INGEST_BATCH = 500  # the ingestion API's largest batch
PROCESS_BATCH = 5000


def simulation_refusal(campaign: Campaign) -> str | None:
    """Why the simulator cannot run `campaign`, or None."""
    if campaign.status != CampaignStatus.RUNNING:
        return "it is not running: start it first"
    if campaign.channel != CampaignChannel.ON_SITE:
        return "only on-site notifications are simulated"
    if "segment" in campaign.targeting or campaign.trigger.get("kind") == "segment_entered":
        # Memberships are refreshed on the real clock by the segments stage, not at the
        # simulated one.
        return "the simulator cannot evaluate segment triggers or targeting"
    return None


@dataclass(slots=True)
class _Shopper:
    visit: Visit
    sent: int = 0  # how many of visit.events went through ingestion
    is_asking: bool = True  # polls the pending answer until it gets a decision or buys or not
    is_shown: bool = False
    is_ended: bool = False  # visit_end has run: whether they buy is decided

    def due(self, clock: datetime) -> list[dict]:
        """The events whose time has come, not sent yet (the visit's events are in time order)."""
        events = self.visit.events
        start = self.sent
        while (
            self.sent < len(events)
            and datetime.fromisoformat(events[self.sent]["timestamp"]) < clock
        ):
            self.sent += 1
        return events[start : self.sent]


@dataclass(slots=True)
class CampaignSimulation:
    """What happened, counted on the simulator's side (the truth), and the experiment's result."""

    visits: int = 0
    events: int = 0
    ticks: int = 0
    # Visits whose decision reached them while they were still browsing, per arm, and of those
    # how many bought.
    exposed: dict[str, int] = field(default_factory=dict)
    bought: dict[str, int] = field(default_factory=dict)
    shown: int = 0
    clicked: int = 0
    dismissed: int = 0
    decisions: dict[str, int] = field(default_factory=dict)  # stored, per arm
    result: ExperimentResult | None = None


def campaign_simulate(
    *,
    campaign: Campaign,
    visitors: int,
    effect: float,
    start: datetime,
    end: datetime,
    seed: int = 7,
    tick: timedelta = TICK,
    progress: Callable[[str], None] | None = None,
) -> CampaignSimulation:
    """Run `visitors` visits starting in `[start, end)` through the campaign; the visits that
    are still going at `end` finish (the clock runs on past it). The results are computed at
    the last tick."""
    refusal = simulation_refusal(campaign)
    if refusal:
        raise ValueError(refusal)
    shop = campaign.shop
    simulator = Simulator(shop_domain=shop.domain, seed=seed, timezone=shop.timezone)
    reactions = random.Random(seed + 1)  # clicks and dismissals, apart from the journeys
    arrivals = deque(simulator.visit_times(visits=visitors, start=start, end=end))
    settle = timedelta(seconds=settings.PIPELINE_SETTLE_SECONDS + PROCESS_DEBOUNCE_SECONDS)
    outcome = CampaignSimulation(visits=len(arrivals))
    shoppers: list[_Shopper] = []
    clock = start
    now = clock
    while arrivals or shoppers:
        clock += tick
        outcome.ticks += 1
        while arrivals and arrivals[0] < clock:
            shoppers.append(_Shopper(simulator.visit_start(arrivals.popleft())))
        due = []
        browsed = []
        for shopper in shoppers:
            due += shopper.due(clock)
            if not shopper.is_ended and shopper.sent == len(shopper.visit.events):
                browsed.append(shopper)
        _ingest(shop, due, at=clock)
        outcome.events += len(due)
        # What a worker does once the batch has settled (PIPELINE_SETTLE_SECONDS and the
        # scheduling debounce): the pipeline, then the live scores, then the decisions.
        now = clock + settle
        _pipeline_run(shop, now=now)
        for shopper in shoppers:
            # The snippet asks on every page load (from the first event on) and every few
            # seconds; a decision is answered at the first tick after it is stored.
            if shopper.sent and shopper.is_asking and not shopper.is_ended:
                _ask(shop, shopper, now=now, reactions=reactions, outcome=outcome)
        for shopper in browsed:
            shopper.visit.clock = max(shopper.visit.clock, now + REACTION)
            simulator.visit_end(shopper.visit, lift=effect if shopper.is_shown else 0.0)
            shopper.is_ended = True
            arm = shopper.visit.variant
            if arm is not None:
                bought = any(e["type"] == "purchase" for e in shopper.visit.events)
                outcome.bought[arm] = outcome.bought.get(arm, 0) + bought
        shoppers = [s for s in shoppers if not (s.is_ended and s.sent == len(s.visit.events))]
        if progress and outcome.ticks % 60 == 0:
            progress(
                f"{clock:%Y-%m-%d %H:%M} simulated: {outcome.events} events, "
                f"{sum(outcome.exposed.values())} exposed, {len(arrivals)} visits to come"
            )
    exposures_extract(shop_id=shop.pk, now=now)
    outcome.result = experiment_results_compute(experiment=campaign.experiment, now=now)
    outcome.decisions = dict(
        campaign.decisions.values_list("arm").annotate(n=Count("id")).values_list("arm", "n")
    )
    return outcome


def _ingest(shop: Shop, events: list[dict], *, at: datetime) -> None:
    for index in range(0, len(events), INGEST_BATCH):
        result = events_ingest(
            shop=shop, events=events[index : index + INGEST_BATCH], received_at=at, sent_at=at
        )
        if result.rejected:
            raise ValueError(f"the simulator sent an invalid event: {result.rejected[0]}")


def _pipeline_run(shop: Shop, *, now: datetime) -> None:
    while events_process(shop_id=shop.pk, now=now, batch_size=PROCESS_BATCH).has_more:
        pass
    score_services.scores_refresh(shop_id=shop.pk, now=now)
    campaign_decisions_run(shop_id=shop.pk, now=now)


def _ask(
    shop: Shop,
    shopper: _Shopper,
    *,
    now: datetime,
    reactions: random.Random,
    outcome: CampaignSimulation,
) -> None:
    """The snippet's poll: a decision is seen once, exposed, and its notification shown."""
    visit = shopper.visit
    answer = notification_pending(
        shop=shop, anonymous_id=visit.visitor.anonymous_id, has_consent=True, now=now
    )
    exposure = answer["exposure"]
    if exposure is None:
        return
    shopper.is_asking = False
    visit.variant = exposure["variant"]
    outcome.exposed[exposure["variant"]] = outcome.exposed.get(exposure["variant"], 0) + 1
    page = urlsplit(visit.events[shopper.sent - 1]["url"]).path or "/"
    visit.emit_at(now, "experiment_exposure", page, properties=dict(exposure))
    notification = answer["notification"]
    if notification is None:
        return
    shopper.is_shown = True
    outcome.shown += 1
    about: dict[str, Any] = {
        "campaign": answer["campaign"],
        "decision": answer["decision"],
        "variant": exposure["variant"],
    }
    visit.emit_at(now, "notification_shown", page, properties=about)
    roll = reactions.random()
    if roll < CLICK_SHARE:
        outcome.clicked += 1
        visit.emit_at(now + REACTION / 2, "notification_clicked", page, properties=about)
    elif roll < CLICK_SHARE + (1 - CLICK_SHARE) * DISMISS_SHARE:
        outcome.dismissed += 1
        visit.emit_at(now + REACTION / 2, "notification_dismissed", page, properties=about)
