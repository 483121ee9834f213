"""Every write to campaigns: create (with its experiment), edit, start, pause, stop, and the
discount code pool.

Like the experiments' services, each validates everything first and raises one
`ApplicationError` carrying every field error, then writes inside `transaction.atomic`, so a
rejected call saves nothing (neither the campaign nor its experiment). A state change bumps the
shop's campaign generation once it commits, which empties every cached pending answer.
"""

import contextlib
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.core.cache import cache
from django.db import IntegrityError, transaction
from redis.exceptions import RedisError

from clickserver.errors import ApplicationError
from clickserver.webhook_guard import WebhookRefused, webhook_url_validate
from events.models import Shop
from notifications.campaigns import rules
from notifications.campaigns.rules import HOLDOUT_ARM, ContentIn
from notifications.campaigns.selectors import generation_key, score_band_default
from notifications.experiments import services as experiment_services
from notifications.experiments.rules import SLUG, VariantIn
from notifications.models import Campaign, CampaignChannel, CampaignStatus, DiscountCode
from segments.models import Segment

KEY_MAX = 48
NAME_MAX = 255
EXPERIMENT_KEY_PREFIX = "campaign-"
CODE_MAX = 64
CODES_PER_UPLOAD = 10000
WEBHOOK_URL_MAX = 1024
CAP_FIELDS = (
    "holdout_share",
    "max_per_person_day",
    "max_per_person_week",
    "quiet_start_hour",
    "quiet_end_hour",
)
# What PATCH may change: not the key or the variants (they are the experiment's arms).
EDITABLE_FIELDS = frozenset(
    {"name", "trigger", "targeting", "channel", "webhook_url", "is_consent_required", *CAP_FIELDS}
) - {"holdout_share"}


def generation_bump(shop_id: int) -> None:
    """Empty every cached pending answer of the shop (selectors.notification_pending), and
    whether its snippet carries the toast."""
    with contextlib.suppress(RedisError):
        cache.delete(f"campaigns:snippet:{shop_id}")
        try:
            cache.incr(generation_key(shop_id))
        except ValueError:
            cache.set(generation_key(shop_id), 1, None)


def _generation_bump_on_commit(shop_id: int) -> None:
    transaction.on_commit(lambda: generation_bump(shop_id))


def _definition_clean(
    *, shop: Shop, data: Mapping[str, Any], now: datetime
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    cleaned: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    if "key" in data:
        key = data["key"]
        if isinstance(key, str) and len(key) <= KEY_MAX and SLUG.match(key):
            cleaned["key"] = key
        else:
            errors["key"] = [f"a slug of 1-{KEY_MAX} letters, digits, '-' or '_'"]
    if "name" in data:
        name = data["name"]
        if isinstance(name, str) and 0 < len(name.strip()) <= NAME_MAX:
            cleaned["name"] = name.strip()
        else:
            errors["name"] = [f"1-{NAME_MAX} characters"]
    if "trigger" in data:
        trigger = data["trigger"]
        if (
            isinstance(trigger, Mapping)
            and trigger.get("kind") == rules.SCORE_BAND
            and ("low" not in trigger or "high" not in trigger)
        ):
            band = score_band_default(shop=shop, now=now)
            trigger = {"low": band.low, "high": band.high} | dict(trigger)
        cleaned["trigger"], problems = rules.trigger_validate(trigger)
        errors |= problems
    if "targeting" in data:
        cleaned["targeting"], problems = rules.targeting_validate(data["targeting"])
        errors |= problems
    if "variants" in data:
        variants, problems = rules.variants_validate(data["variants"])
        cleaned["variants"] = [
            {
                "key": v.key,
                "title": v.title,
                "body": v.body,
                "cta_url": v.cta_url,
                "cta_text": v.cta_text,
            }
            for v in variants
        ]
        errors |= problems
    if "channel" in data:
        if data["channel"] in CampaignChannel.values:
            cleaned["channel"] = data["channel"]
        else:
            errors["channel"] = [f"one of {CampaignChannel.values}"]
    if "webhook_url" in data:
        url = data["webhook_url"]
        if url == "":
            cleaned["webhook_url"] = ""
        elif isinstance(url, str) and len(url) > WEBHOOK_URL_MAX:
            errors["webhook_url"] = [f"at most {WEBHOOK_URL_MAX} characters"]
        else:
            try:
                webhook_url_validate(url)
            except WebhookRefused as refusal:
                errors["webhook_url"] = [str(refusal)]
            else:
                cleaned["webhook_url"] = url
    if "is_consent_required" in data:
        if isinstance(data["is_consent_required"], bool):
            cleaned["is_consent_required"] = data["is_consent_required"]
        else:
            errors["is_consent_required"] = ["true or false"]
    caps, problems = rules.caps_validate({k: v for k, v in data.items() if k in CAP_FIELDS})
    cleaned |= caps
    errors |= problems
    segments = {
        value["segment"]
        for value in (cleaned.get("targeting", {}), cleaned.get("trigger", {}))
        if "segment" in value
    }
    if segments:
        known = set(Segment.objects.filter(shop=shop, pk__in=segments).values_list("pk", flat=True))
        for field, value in (
            ("targeting.segment", cleaned.get("targeting", {})),
            ("trigger.segment", cleaned.get("trigger", {})),
        ):
            if "segment" in value and value["segment"] not in known:
                errors[field] = ["no such segment in this shop"]
    return cleaned, errors


def _channel_check(*, channel: str, webhook_url: str, errors: dict[str, list[str]]) -> None:
    """A webhook campaign needs its receiver's URL; no other channel takes one."""
    if "webhook_url" in errors or "channel" in errors:
        return
    if channel == CampaignChannel.WEBHOOK and not webhook_url:
        errors["webhook_url"] = ["required for channel webhook: an http(s) URL"]
    elif channel != CampaignChannel.WEBHOOK and webhook_url:
        errors["webhook_url"] = ["only with channel webhook"]


def _secret_ensure(campaign: Campaign) -> None:
    """A webhook campaign signs with its own secret, generated once (docs/campaigns.md)."""
    if campaign.channel == CampaignChannel.WEBHOOK and not campaign.webhook_secret:
        campaign.webhook_secret = secrets.token_hex(32)


def _arms(*, variants: Sequence[Mapping[str, Any]], holdout_share: float) -> list[VariantIn]:
    """The holdout (the control: targeted, decided, shown nothing) and one arm per content
    variant, sharing the rest equally."""
    share = (1 - holdout_share) / len(variants)
    return [
        VariantIn(key=HOLDOUT_ARM, weight=holdout_share, is_control=True, name="Holdout"),
        # Named by key: the title is a template ("Free shipping on {product}"), which would read
        # oddly in the experiment's verdict and tables.
        *(VariantIn(key=v["key"], weight=share, name=v["key"]) for v in variants),
    ]


def campaign_create(
    *,
    shop: Shop,
    key: str,
    name: str,
    trigger: Mapping[str, Any],
    variants: Sequence[ContentIn],
    now: datetime,
    targeting: Mapping[str, Any] | None = None,
    channel: str = CampaignChannel.ON_SITE,
    webhook_url: str = "",
    holdout_share: float = 0.1,
    max_per_person_day: int = 1,
    max_per_person_week: int = 3,
    quiet_start_hour: int | None = None,
    quiet_end_hour: int | None = None,
    is_consent_required: bool = False,
) -> Campaign:
    """A draft campaign and its draft experiment (unit person, primary metric conversion)."""
    data = {
        "key": key,
        "name": name,
        "trigger": trigger,
        "targeting": targeting if targeting is not None else {},
        "variants": list(variants),
        "channel": channel,
        "webhook_url": webhook_url,
        "holdout_share": holdout_share,
        "max_per_person_day": max_per_person_day,
        "max_per_person_week": max_per_person_week,
        "quiet_start_hour": quiet_start_hour,
        "quiet_end_hour": quiet_end_hour,
        "is_consent_required": is_consent_required,
    }
    cleaned, errors = _definition_clean(shop=shop, data=data, now=now)
    _channel_check(
        channel=cleaned.get("channel", ""),
        webhook_url=cleaned.get("webhook_url", ""),
        errors=errors,
    )
    if errors:
        raise ApplicationError("Invalid campaign.", fields=errors)
    if Campaign.objects.filter(shop=shop, key=key).exists():
        raise ApplicationError(
            f"The shop already has a campaign {key!r}.",
            code="conflict",
            fields={"key": ["in use"]},
        )
    try:
        with transaction.atomic():
            experiment = experiment_services.experiment_create(
                shop=shop,
                key=f"{EXPERIMENT_KEY_PREFIX}{key}",
                name=f"Campaign: {cleaned['name']}"[:255],
                hypothesis="The notification raises conversion against the holdout.",
                unit="person",
                primary_metric={"kind": "conversion"},
                secondary_metrics=[{"kind": "revenue_per_unit"}],
                variants=_arms(
                    variants=cleaned["variants"], holdout_share=cleaned["holdout_share"]
                ),
            )
            campaign = Campaign(shop=shop, experiment=experiment, **cleaned)
            _secret_ensure(campaign)
            campaign.save()
    except IntegrityError as exc:
        if "uniq_campaign_shop_key" not in str(exc):
            raise
        raise ApplicationError(
            f"The shop already has a campaign {key!r}.", code="conflict", fields={"key": ["in use"]}
        ) from exc
    return campaign


def _locked(campaign: Campaign) -> Campaign:
    return Campaign.objects.select_for_update().select_related("experiment").get(pk=campaign.pk)


def _stopped_refuse(campaign: Campaign, action: str) -> None:
    if campaign.status == CampaignStatus.STOPPED:
        raise ApplicationError(
            f"A stopped campaign cannot be {action}; create a new one.",
            fields={"status": ["stopped"]},
        )


def campaign_update(*, campaign: Campaign, data: Mapping[str, Any], now: datetime) -> Campaign:
    """Edit the trigger, targeting, caps, channel or name; the key and the content variants are
    the experiment's design and fixed once created (a new campaign changes them)."""
    fixed = set(data) - EDITABLE_FIELDS
    if fixed:
        raise ApplicationError(
            "These fields cannot change; create a new campaign.",
            fields={name: ["fixed after creation"] for name in sorted(fixed)},
        )
    with transaction.atomic():
        campaign = _locked(campaign)
        _stopped_refuse(campaign, "edited")
        quiet = {
            k: data.get(k, getattr(campaign, k)) for k in ("quiet_start_hour", "quiet_end_hour")
        }
        merged = dict(data) | (quiet if set(quiet) & set(data) else {})
        cleaned, errors = _definition_clean(shop=campaign.shop, data=merged, now=now)
        channel = cleaned.get("channel", campaign.channel)
        # Leaving the webhook channel drops its URL unless the request names one.
        default_url = campaign.webhook_url if channel == CampaignChannel.WEBHOOK else ""
        _channel_check(
            channel=channel,
            webhook_url=cleaned.get("webhook_url", default_url),
            errors=errors,
        )
        if errors:
            raise ApplicationError("Invalid campaign.", fields=errors)
        for name, value in cleaned.items():
            setattr(campaign, name, value)
        campaign.webhook_url = cleaned.get("webhook_url", default_url)
        _secret_ensure(campaign)
        campaign.save()
        _generation_bump_on_commit(campaign.shop_id)
    return campaign


def campaign_start(*, campaign: Campaign, now: datetime) -> Campaign:
    """draft or paused → running; the first start starts the experiment (its phase 1)."""
    with transaction.atomic():
        campaign = _locked(campaign)
        _stopped_refuse(campaign, "started again")
        if campaign.status == CampaignStatus.RUNNING:
            raise ApplicationError(
                "The campaign is already running.", fields={"status": ["running"]}
            )
        if campaign.status == CampaignStatus.DRAFT:
            campaign.experiment = experiment_services.experiment_start(
                experiment=campaign.experiment, now=now
            )
            campaign.started_at = now
        campaign.status = CampaignStatus.RUNNING
        campaign.save()
        _generation_bump_on_commit(campaign.shop_id)
    return campaign


def campaign_pause(*, campaign: Campaign, now: datetime) -> Campaign:
    """running → paused: no new decisions, nothing pending served; the experiment keeps its
    phase (those already decided stay in it)."""
    del now
    with transaction.atomic():
        campaign = _locked(campaign)
        if campaign.status != CampaignStatus.RUNNING:
            raise ApplicationError(
                "Only a running campaign can be paused.", fields={"status": [campaign.status]}
            )
        campaign.status = CampaignStatus.PAUSED
        campaign.save()
        _generation_bump_on_commit(campaign.shop_id)
    return campaign


def campaign_stop(*, campaign: Campaign, now: datetime) -> Campaign:
    """The global stop: nothing is decided or served again, and the experiment stops."""
    with transaction.atomic():
        campaign = _locked(campaign)
        _stopped_refuse(campaign, "stopped again")
        campaign.experiment = experiment_services.experiment_stop(
            experiment=campaign.experiment, now=now
        )
        campaign.status = CampaignStatus.STOPPED
        campaign.stopped_at = now
        campaign.save()
        _generation_bump_on_commit(campaign.shop_id)
    return campaign


def campaigns_pause_all(*, shop: Shop, now: datetime) -> list[Campaign]:
    """The shop's emergency brake: every running campaign paused at once, in one transaction
    (no decision after it, nothing pending served: one generation bump voids every browser's
    cached answer). Pausing, not stopping: each campaign's experiment keeps its phase and the
    owner starts again what should run. Returns the campaigns it paused."""
    with transaction.atomic():
        running = list(
            Campaign.objects.select_for_update()
            .select_related("experiment")
            .filter(shop=shop, status=CampaignStatus.RUNNING)
            .order_by("pk")
        )
        Campaign.objects.filter(pk__in=[c.pk for c in running]).update(
            status=CampaignStatus.PAUSED, updated_at=now
        )
        for campaign in running:
            campaign.status, campaign.updated_at = CampaignStatus.PAUSED, now
        if running:
            _generation_bump_on_commit(shop.pk)
    return running


def discount_codes_upload(*, campaign: Campaign, codes: Sequence[str]) -> int:
    """Add codes to the campaign's pool; a code already in it is skipped. Returns how many
    were added. Each person later claims one code (decisions.py)."""
    cleaned = [code.strip() for code in codes if isinstance(code, str)]
    bad = [
        index
        for index, code in enumerate(cleaned)
        if not 0 < len(code) <= CODE_MAX or any(c.isspace() for c in code)
    ]
    if len(cleaned) != len(codes) or bad or not 0 < len(codes) <= CODES_PER_UPLOAD:
        raise ApplicationError(
            "Invalid discount codes.",
            fields={
                "codes": [
                    f"a list of 1-{CODES_PER_UPLOAD} codes of 1-{CODE_MAX} characters without "
                    f"spaces; bad: {bad[:20]}"
                ]
            },
        )
    if campaign.status == CampaignStatus.STOPPED:
        raise ApplicationError("The campaign is stopped.", fields={"status": ["stopped"]})
    with transaction.atomic():
        existing = set(
            DiscountCode.objects.filter(campaign=campaign, code__in=cleaned).values_list(
                "code", flat=True
            )
        )
        new = sorted(set(cleaned) - existing)
        DiscountCode.objects.bulk_create(
            [DiscountCode(campaign=campaign, code=code) for code in new], batch_size=1000
        )
    return len(new)
