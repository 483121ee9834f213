"""Reads of a campaign's results: decisions per arm and per trigger kind, what the storefront did
with the toast (shown / clicked / dismissed per arm, from the snippet's events), and conversions,
revenue and the incremental revenue per arm from the campaign's experiment's stored results.

Nothing is computed here that the experiment already computes: uplifts, intervals and the verdict
are the stored `ExperimentResult` document's (docs/experiments.md, "Results"); this module only
reads it and scales the revenue difference by the treatment's units (`incremental_revenue`).
docs/campaigns.md, "Results", has the formulas.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from django.db.models import Case, CharField, Count, Value, When

from events.models import Event, Shop
from notifications.campaigns.rules import HOLDOUT_ARM, REASON_PREFIXES, trigger_summary
from notifications.models import (
    Campaign,
    CampaignDecision,
    CampaignDelivery,
    DeliveryStatus,
    ExperimentResult,
)

SHOWN = "notification_shown"
CLICKED = "notification_clicked"
DISMISSED = "notification_dismissed"
ONSITE_TYPES = (SHOWN, CLICKED, DISMISSED)
OTHER_REASON = "other"
CONVERSION = "conversion"
REVENUE = "revenue_per_unit"
# Decision ids are looked up in slices this long (an IN list MariaDB plans well).
ID_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Interval:
    estimate: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True, slots=True)
class IncrementalRevenue:
    """Revenue the campaign added: Σ over treatment arms of (RPU_arm − RPU_holdout) × units_arm."""

    estimate: float
    ci_low: float
    ci_high: float
    treatment_units: int
    # Whether the interval is exact (one treatment arm) or the conservative sum of the arms'.
    is_exact: bool


def arm_incremental_revenue(*, difference: Mapping[str, float], units: int) -> Interval:
    """One treatment arm: the experiment's revenue-per-unit difference against the holdout
    (estimate and interval, CUPED-adjusted when a covariate applied) times the arm's units.

    Scaling by the fixed n keeps the coverage: if [l, h] covers Δ, [n·l, n·h] covers n·Δ.
    """
    return Interval(
        estimate=difference["estimate"] * units,
        ci_low=difference["ci_low"] * units,
        ci_high=difference["ci_high"] * units,
    )


def incremental_revenue(arms: Sequence[Mapping[str, Any]]) -> IncrementalRevenue | None:
    """The campaign's incremental revenue from the document's arms (None when no treatment arm
    has a revenue interval yet).

    With several content arms the estimate is the sum of theirs and the interval the sum of
    their endpoints: the arms share the holdout, so their errors are correlated, and
    sd(ΣX) ≤ Σ sd(X) makes the summed half-widths a conservative (≥ 95 %) interval.
    """
    parts = []
    units = 0
    for arm in arms:
        if arm["is_control"]:
            continue
        difference = arm["metrics"].get(REVENUE, {}).get("absolute")
        if difference is None:
            return None
        parts.append(arm_incremental_revenue(difference=difference, units=arm["units"]))
        units += arm["units"]
    if not parts:
        return None
    return IncrementalRevenue(
        estimate=sum(p.estimate for p in parts),
        ci_low=sum(p.ci_low for p in parts),
        ci_high=sum(p.ci_high for p in parts),
        treatment_units=units,
        is_exact=len(parts) == 1,
    )


def _reason_kind() -> Case:
    return Case(
        *(When(reason__startswith=prefix, then=Value(kind)) for prefix, kind in REASON_PREFIXES),
        default=Value(OTHER_REASON),
        output_field=CharField(),
    )


def _decisions_read(campaign: Campaign) -> list[dict[str, Any]]:
    """Per arm and trigger kind, the decisions of the experiment's current phase."""
    groups = (
        CampaignDecision.objects.filter(campaign=campaign, phase=campaign.experiment.phase)
        .annotate(reason_kind=_reason_kind())
        .values("arm", "reason_kind")
        .annotate(decisions=Count("id"))
        .order_by("arm", "reason_kind")
    )
    return [dict(group) for group in groups]


def _decision_id(value: Any) -> int | None:
    # The snippet sends the id as a number; anything else (a forged or broken event) is ignored.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def onsite_read(*, shop: Shop, campaigns: Sequence[Campaign]) -> dict[int, dict[str, dict]]:
    """Per campaign, per event type, per arm: the decisions with at least one such event.

    Decisions, not events: a toast seen in two tabs is one decision shown. An event counts only
    when its `decision` is a decision of the campaign it names, in the experiment's current
    phase, and the arm is the decision's (stored by the server), not the event's `variant`.
    """
    counts: dict[int, dict[str, dict]] = {
        c.pk: {kind: defaultdict(int) for kind in ONSITE_TYPES} for c in campaigns
    }
    # A campaign shows nothing before its experiment starts (a draft has no decisions).
    started = [c for c in campaigns if c.experiment.started_at is not None]
    if not started:
        return {pk: {kind: {} for kind in ONSITE_TYPES} for pk in counts}
    by_key = {c.key: c for c in started}
    since = min(c.experiment.started_at for c in started if c.experiment.started_at)
    rows = (
        Event.objects.filter(
            shop=shop,
            type__in=ONSITE_TYPES,
            occurred_at__gte=since,
            properties__campaign__in=list(by_key),
        )
        .values_list("properties__campaign", "type", "properties__decision")
        .distinct()
    )
    wanted: dict[int, set[tuple[int, str]]] = defaultdict(set)
    for key, kind, raw in rows:
        decision = _decision_id(raw)
        campaign = by_key.get(key) if isinstance(key, str) else None
        if decision is not None and campaign is not None:
            wanted[decision].add((campaign.pk, kind))
    phases = {c.pk: c.experiment.phase for c in started}
    ids = sorted(wanted)
    for start in range(0, len(ids), ID_CHUNK):
        for pk, campaign_id, arm, phase in CampaignDecision.objects.filter(
            pk__in=ids[start : start + ID_CHUNK], campaign_id__in=list(phases)
        ).values_list("pk", "campaign_id", "arm", "phase"):
            if phase != phases[campaign_id]:
                continue
            for named, kind in wanted[pk]:
                if named == campaign_id:
                    counts[campaign_id][kind][arm] += 1
    return {pk: {kind: dict(arms) for kind, arms in kinds.items()} for pk, kinds in counts.items()}


def campaign_deliveries(*, campaign: Campaign, shown: Mapping[str, int]) -> list[dict[str, Any]]:
    """Deliveries per channel and arm, of the experiment's current phase.

    On-site, a delivery is a toast the browser showed (the holdout gets none). Email and webhook
    deliveries are the `CampaignDelivery` log: `delivered` counts the `sent` rows per arm and
    `by_status` every row per status (the holdout's rows are `skipped`, so both arms show).
    """
    channels = [
        {
            "channel": "on_site",
            "delivered": {arm: count for arm, count in shown.items() if arm != HOLDOUT_ARM},
            "total": sum(count for arm, count in shown.items() if arm != HOLDOUT_ARM),
        }
    ]
    rows = (
        CampaignDelivery.objects.filter(
            campaign=campaign, decision__phase=campaign.experiment.phase
        )
        .values_list("channel", "decision__arm", "status")
        .annotate(count=Count("id"))
        .order_by("channel")
    )
    logged: dict[str, dict[str, Any]] = {}
    for channel, arm, status, count in rows:
        entry = logged.setdefault(
            channel, {"channel": channel, "delivered": {}, "total": 0, "by_status": {}}
        )
        entry["by_status"][status] = entry["by_status"].get(status, 0) + count
        if status == DeliveryStatus.SENT:
            entry["delivered"][arm] = entry["delivered"].get(arm, 0) + count
            entry["total"] += count
    return channels + list(logged.values())


def _stored_result(campaign: Campaign) -> ExperimentResult | None:
    experiment = campaign.experiment
    if experiment.phase == 0:
        return None
    return ExperimentResult.objects.filter(experiment=experiment, phase=experiment.phase).first()


def _comparison(metric: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not metric or "absolute" not in metric:
        return None
    return {
        "absolute": metric.get("absolute"),
        "relative": metric.get("relative"),
        "p_value": metric.get("p_value"),
        "is_significant": metric.get("is_significant"),
        "chance_to_beat_control": metric.get("chance_to_beat_control"),
    }


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _arm_keys(campaign: Campaign, document: Mapping[str, Any] | None) -> list[str]:
    if document:
        return [arm["variant"] for arm in document["arms"]]
    return [HOLDOUT_ARM, *(v["key"] for v in campaign.variants)]


def campaign_results(
    *, campaign: Campaign, result: ExperimentResult | None = None
) -> dict[str, Any]:
    """The campaign's results document (the API's JSON; `results_rows` flattens it for CSV).

    `result` is the experiment's stored result of its current phase; by default it is read.
    """
    result = result if result is not None else _stored_result(campaign)
    document = result.data if result is not None else None
    decided = _decisions_read(campaign)
    onsite = onsite_read(shop=campaign.shop, campaigns=[campaign])[campaign.pk]
    per_arm_decisions: dict[str, int] = defaultdict(int)
    for group in decided:
        per_arm_decisions[group["arm"]] += group["decisions"]
    documented = {arm["variant"]: arm for arm in (document or {}).get("arms", [])}
    arms = []
    for key in _arm_keys(campaign, document):
        shown, clicked = onsite[SHOWN].get(key, 0), onsite[CLICKED].get(key, 0)
        row: dict[str, Any] = {
            "arm": key,
            "is_holdout": key == HOLDOUT_ARM,
            "decisions": per_arm_decisions.get(key, 0),
            "shown": shown,
            "clicked": clicked,
            "dismissed": onsite[DISMISSED].get(key, 0),
            "click_through_rate": _rate(clicked, shown),
            "exposed": None,
            "units": None,
            "conversions": None,
            "conversion_rate": None,
            "revenue_per_unit": None,
            "net_revenue": None,
            "conversion": None,
            "revenue": None,
            "incremental_revenue": None,
        }
        arm = documented.get(key)
        if arm is not None:
            metrics = arm["metrics"]
            revenue_per_unit = metrics.get(REVENUE, {}).get("mean")
            row |= {
                "exposed": arm["exposed"],
                "units": arm["units"],
                "conversions": arm["conversions"],
                "conversion_rate": metrics.get(CONVERSION, {}).get("mean"),
                "revenue_per_unit": revenue_per_unit,
                "net_revenue": (
                    revenue_per_unit * arm["units"] if revenue_per_unit is not None else None
                ),
            }
            if not arm["is_control"]:
                row["conversion"] = _comparison(metrics.get(CONVERSION))
                row["revenue"] = _comparison(metrics.get(REVENUE))
                difference = metrics.get(REVENUE, {}).get("absolute")
                if difference is not None:
                    row["incremental_revenue"] = asdict(
                        arm_incremental_revenue(difference=difference, units=arm["units"])
                    )
        arms.append(row)
    incremental = incremental_revenue(document["arms"]) if document else None
    shown_per_arm = {row["arm"]: row["shown"] for row in arms}
    experiment = campaign.experiment
    return {
        "campaign": {
            "id": campaign.pk,
            "key": campaign.key,
            "name": campaign.name,
            "status": campaign.status,
            "channel": campaign.channel,
            "trigger": campaign.trigger,
            "trigger_summary": trigger_summary(campaign.trigger),
        },
        "experiment": {
            "id": experiment.pk,
            "key": experiment.key,
            "status": experiment.status,
            "phase": experiment.phase,
        },
        "currency": campaign.shop.currency,
        "decisions": {
            "total": sum(per_arm_decisions.values()),
            "by_arm": dict(per_arm_decisions),
            "by_reason": decided,
        },
        "arms": arms,
        "deliveries": campaign_deliveries(campaign=campaign, shown=shown_per_arm),
        "incremental_revenue": asdict(incremental) if incremental else None,
        "alpha": document["alpha"] if document else None,
        "is_sequential": document["is_sequential"] if document else None,
        "verdict": document["verdict"] if document else None,
        "results_computed_at": result.computed_at if result is not None else None,
    }


def results_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-arm table flat, one row per arm: what the CSV download holds."""

    def part(value: Mapping[str, Any] | None, *keys: str) -> Any:
        for key in keys:
            if value is None:
                return None
            value = value.get(key)
        return value

    rows = []
    for arm in results["arms"]:
        rows.append(
            {
                "arm": arm["arm"],
                "is_holdout": arm["is_holdout"],
                "decisions": arm["decisions"],
                "shown": arm["shown"],
                "clicked": arm["clicked"],
                "dismissed": arm["dismissed"],
                "click_through_rate": arm["click_through_rate"],
                "units": arm["units"],
                "conversions": arm["conversions"],
                "conversion_rate": arm["conversion_rate"],
                "conversion_difference": part(arm["conversion"], "absolute", "estimate"),
                "conversion_difference_ci_low": part(arm["conversion"], "absolute", "ci_low"),
                "conversion_difference_ci_high": part(arm["conversion"], "absolute", "ci_high"),
                "conversion_uplift": part(arm["conversion"], "relative", "estimate"),
                "conversion_uplift_ci_low": part(arm["conversion"], "relative", "ci_low"),
                "conversion_uplift_ci_high": part(arm["conversion"], "relative", "ci_high"),
                "conversion_p_value": part(arm["conversion"], "p_value"),
                "revenue_per_unit": arm["revenue_per_unit"],
                "net_revenue": arm["net_revenue"],
                "revenue_per_unit_difference": part(arm["revenue"], "absolute", "estimate"),
                "revenue_per_unit_difference_ci_low": part(arm["revenue"], "absolute", "ci_low"),
                "revenue_per_unit_difference_ci_high": part(arm["revenue"], "absolute", "ci_high"),
                "incremental_revenue": part(arm["incremental_revenue"], "estimate"),
                "incremental_revenue_ci_low": part(arm["incremental_revenue"], "ci_low"),
                "incremental_revenue_ci_high": part(arm["incremental_revenue"], "ci_high"),
            }
        )
    return rows


def campaigns_headlines(*, shop: Shop, campaigns: Iterable[Campaign]) -> dict[int, dict[str, Any]]:
    """Per campaign, the dashboard list's figures: decisions, shown, click-through rate, the
    incremental revenue with its interval and the verdict, from stored results only (the same
    queries whatever the number of campaigns: one more per ID_CHUNK decisions with a toast)."""
    campaigns = list(campaigns)
    decisions = dict(
        CampaignDecision.objects.filter(campaign__in=campaigns)
        .values("campaign_id")
        .annotate(n=Count("id"))
        .values_list("campaign_id", "n")
    )
    onsite = onsite_read(shop=shop, campaigns=campaigns)
    stored = {
        (experiment_id, phase): data
        for experiment_id, phase, data in ExperimentResult.objects.filter(
            experiment__campaign__in=campaigns
        ).values_list("experiment_id", "phase", "data")
    }
    headlines = {}
    for campaign in campaigns:
        document = stored.get((campaign.experiment_id, campaign.experiment.phase))
        shown = sum(onsite[campaign.pk][SHOWN].values())
        clicked = sum(onsite[campaign.pk][CLICKED].values())
        incremental = incremental_revenue(document["arms"]) if document else None
        headlines[campaign.pk] = {
            "trigger_summary": trigger_summary(campaign.trigger),
            "decisions": decisions.get(campaign.pk, 0),
            "shown": shown,
            "clicked": clicked,
            "click_through_rate": _rate(clicked, shown),
            "incremental_revenue": asdict(incremental) if incremental else None,
            "verdict": document["verdict"] if document else None,
        }
    return headlines
