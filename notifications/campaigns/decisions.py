"""Decisions in real time: after each processed batch, the running campaigns are evaluated for
the shop's live sessions that no campaign has decided yet, and a `CampaignDecision` is stored.

Runs as a pipeline follow-up after the live scores (settings.PIPELINE_FOLLOW_UPS). It is
idempotent: one decision per (campaign, session) by a unique key, a session that any campaign has
decided is not decided again (one notification per session), and a re-run finds nothing new. The
arm is the experiment's deterministic assignment of the person (`variant_assign`), so a re-run,
another worker or the results all agree on it. A holdout decision is stored like the others but
claims no code and shows nothing. docs/campaigns.md, "Decisions", has the rules in order.
"""

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from django.core.cache import cache
from django.db import IntegrityError, transaction
from redis.exceptions import RedisError

from analytics.selectors.bots import bot_people_excluded
from events.models import ConsentMode, Session, Shop
from notifications import selectors as score_selectors
from notifications.campaigns import deliveries, rules, selectors
from notifications.campaigns.rules import HOLDOUT_ARM
from notifications.experiments.assignment import Arm, unit_id_build, variant_assign
from notifications.models import Campaign, CampaignChannel, CampaignDecision, DiscountCode

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DecideResult:
    campaigns: int
    sessions: int
    decisions: int
    holdout: int


def _code_claim(*, campaign: Campaign, unit_id: str, now: datetime) -> str:
    """This person's code of the pool: the one they hold, else the first free one, claimed under
    a row lock (SKIP LOCKED: concurrent claims take different codes). "" when the pool is empty
    or the campaign has none."""
    held = (
        DiscountCode.objects.filter(campaign=campaign, claimed_unit_id=unit_id)
        .values_list("code", flat=True)
        .first()
    )
    if held is not None:
        return held
    free = (
        DiscountCode.objects.select_for_update(skip_locked=True)
        .filter(campaign=campaign, claimed_unit_id__isnull=True)
        .order_by("pk")
        .first()
    )
    if free is None:
        return ""
    free.claimed_unit_id = unit_id
    free.claimed_at = now
    free.save(update_fields=["claimed_unit_id", "claimed_at"])
    return free.code


def _pending_drop_on_commit(*, shop_id: int, anonymous_id: str) -> None:
    def drop() -> None:
        with contextlib.suppress(RedisError):
            cache.delete(selectors.pending_cache_key(shop_id=shop_id, anonymous_id=anonymous_id))

    transaction.on_commit(drop)


def _decision_store(
    *,
    campaign: Campaign,
    session_id: int,
    person_id: int,
    facts: rules.SessionFacts,
    ids: selectors.SessionIds,
    unit_id: str,
    arm: str,
    reason: str,
    has_codes: bool,
    now: datetime,
) -> bool:
    """Store one decision with its claimed code; False when another run stored it first.

    A savepoint inside the campaign's transaction: a lost race rolls back this row (and its
    claim) only."""
    content = next((v for v in campaign.variants if v["key"] == arm), None)
    values = {
        "first_name": ids.first_name,
        "product": ids.product,
        "cart_value": rules.cart_value_format(facts.cart_value, campaign.shop.currency),
    }
    try:
        with transaction.atomic():
            code = (
                _code_claim(campaign=campaign, unit_id=unit_id, now=now)
                if content is not None and has_codes
                else ""
            )
            decision = CampaignDecision.objects.create(
                campaign=campaign,
                shop_id=campaign.shop_id,
                session_id=session_id,
                person_id=person_id,
                anonymous_id=ids.anonymous_id,
                unit_id=unit_id,
                phase=campaign.experiment.phase,
                arm=arm,
                is_holdout=content is None,
                reason=reason[:255],
                score=facts.traits.score,
                title=rules.text_render(content["title"], values)[:255] if content else "",
                body=rules.text_render(content["body"], values) if content else "",
                cta_url=rules.cta_url_with_code(content["cta_url"], code) if content else "",
                cta_text=rules.text_render(content["cta_text"], values)[:64] if content else "",
                discount_code=code,
                created_at=now,
            )
            if campaign.channel == CampaignChannel.ON_SITE:
                _pending_drop_on_commit(shop_id=campaign.shop_id, anonymous_id=ids.anonymous_id)
            else:
                delivery_id = deliveries.delivery_create(
                    decision=decision, campaign=campaign, now=now
                )
                if not decision.is_holdout:
                    deliveries.deliveries_schedule_on_commit([delivery_id])
    except IntegrityError as exc:
        if "uniq_decision_campaign_session" not in str(exc):
            raise
        return False
    return True


def campaign_decisions_run(*, shop_id: int, now: datetime) -> DecideResult:
    """Evaluate every running campaign for the shop's live, undecided, unbought sessions."""
    campaigns = selectors.campaigns_deciding(shop_id=shop_id)
    if not campaigns:
        return DecideResult(campaigns=0, sessions=0, decisions=0, holdout=0)
    shop = Shop.objects.get(pk=shop_id)
    live_sessions = score_selectors.sessions_live(shop=shop, now=now).filter(is_converted=False)
    span = rules.score_band_span([campaign.trigger for campaign in campaigns])
    if span is not None:
        # Only score bands: the sessions scored outside every band cannot fire (at 2,000
        # events/s that leaves the few in a band out of thousands of live sessions).
        live_sessions = live_sessions.filter(
            conversion_score__score__gte=span[0], conversion_score__score__lte=span[1]
        )
    live = list(live_sessions)
    decided = selectors.sessions_decided(shop=shop, session_ids=[s.pk for s in live])
    # Never the people the shop's analytics leave out as bots (nor scored: selectors.py).
    bots = bot_people_excluded(shop_id=shop_id)
    sessions = [s for s in live if s.pk not in decided and s.person_id not in bots]
    if not sessions:
        return DecideResult(campaigns=len(campaigns), sessions=0, decisions=0, holdout=0)
    segment_ids = {
        value["segment"]
        for campaign in campaigns
        for value in (campaign.targeting, campaign.trigger)
        if "segment" in value
    }
    facts = selectors.sessions_facts(shop=shop, sessions=sessions, segment_ids=segment_ids, now=now)
    local_hour = now.astimezone(ZoneInfo(shop.timezone)).hour
    stored = holdout = 0
    for campaign in campaigns:
        if rules.is_quiet(
            local_hour=local_hour,
            start=campaign.quiet_start_hour,
            end=campaign.quiet_end_hour,
        ):
            continue
        if campaign.channel != CampaignChannel.ON_SITE and (
            campaign.is_consent_required or shop.consent_mode == ConsentMode.REQUIRED
        ):
            # Consent is known only to the browser (it is applied when a toast is served): an
            # email or webhook campaign that needs it decides nothing.
            continue
        experiment = campaign.experiment
        arms = tuple(Arm(key=v.key, weight=v.weight) for v in experiment.variants.all())
        counts = selectors.decisions_counts(
            campaign=campaign, person_ids={s.person_id for s in sessions}, now=now
        )
        has_codes = selectors.codes_free_exist(campaign=campaign)
        # An email campaign decides only for people the shop can email (holdout included, so
        # both arms are drawn from the same people).
        emailable = (
            set(selectors.persons_emailable(shop=shop, person_ids={s.person_id for s in sessions}))
            if campaign.channel == CampaignChannel.EMAIL
            else None
        )
        # One commit per campaign, not per decision (a commit is a disk flush on MariaDB).
        with transaction.atomic():
            stored_now, holdout_now = _campaign_decide(
                campaign=campaign,
                sessions=sessions,
                facts=facts,
                decided=decided,
                counts=counts,
                arms=arms,
                has_codes=has_codes,
                emailable=emailable,
                now=now,
            )
        stored += stored_now
        holdout += holdout_now
    return DecideResult(
        campaigns=len(campaigns), sessions=len(sessions), decisions=stored, holdout=holdout
    )


def _campaign_decide(
    *,
    campaign: Campaign,
    sessions: list[Session],
    facts: dict[int, tuple[rules.SessionFacts, selectors.SessionIds]],
    decided: set[int],
    counts: dict[int, tuple[int, int]],
    arms: tuple[Arm, ...],
    has_codes: bool,
    emailable: set[int] | None,
    now: datetime,
) -> tuple[int, int]:
    """One campaign over the sessions; `decided` and `counts` are updated as it stores."""
    experiment = campaign.experiment
    stored = holdout = 0
    for session in sessions:
        if session.pk in decided:
            continue
        session_facts, ids = facts[session.pk]
        if session_facts.is_converted:
            continue
        if emailable is not None and session.person_id not in emailable:
            continue
        day, week = counts.get(session.person_id, (0, 0))
        if day >= campaign.max_per_person_day or week >= campaign.max_per_person_week:
            continue
        if not rules.targeting_admits(campaign.targeting, session_facts):
            continue
        reason = rules.trigger_fires(campaign.trigger, session_facts, now=now)
        unit_id = unit_id_build(
            unit=experiment.unit, anonymous_id=ids.anonymous_id, user_id=ids.user_id
        )
        if reason is None or unit_id is None:
            continue
        arm = variant_assign(
            key=experiment.key,
            phase=experiment.phase,
            unit_id=unit_id,
            arms=arms,
            holdout_share=0.0,
        )
        if arm is None:  # never: the experiment has no holdout share, its holdout is an arm
            continue
        if _decision_store(
            campaign=campaign,
            session_id=session.pk,
            person_id=session.person_id,
            facts=session_facts,
            ids=ids,
            unit_id=unit_id,
            arm=arm,
            reason=reason,
            has_codes=has_codes,
            now=now,
        ):
            stored += 1
            holdout += arm == HOLDOUT_ARM
            decided.add(session.pk)
            counts[session.person_id] = (day + 1, week + 1)
    return stored, holdout
