"""Detection for one shop: run the detectors over its rollups, new orders, recent events and
pipeline health, and store what they find (analytics/services/anomalies.py).

Runs after every rollup refresh that changed a day (debounced, `anomalies_detect_schedule`) and
from the beat sweep. Each run re-judges the last two days of hours (late events reopen buckets),
judges the hour in progress for spikes only (a count so far above the band can only grow; a drop
waits for the hour to end), reads orders and events after its watermarks, and resolves a series
anomaly once the metric's newest complete bucket is back inside its band.
"""

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from django.core.cache import cache
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from analytics.detectors.bots import events_detect_bots
from analytics.detectors.findings import Band, Direction, Finding, window_phrase
from analytics.detectors.health import (
    UNTRACKED_ORDERS,
    days_without_events,
    orders_untracked_check,
    pipeline_lag_check,
    rejections_check,
)
from analytics.detectors.orders import orders_detect
from analytics.detectors.seasonal import DAY, HOUR, SeasonalConfig, finding_build, series_baseline
from analytics.models import AlertRule, AnomalyKind, BotTag, DetectionState, NetworkTag
from analytics.periods import HOUR as ONE_HOUR
from analytics.periods import hour_floor, local_date
from analytics.selectors.bots import bot_days_get
from analytics.selectors.detection import (
    BOT_METRIC,
    FREQUENCY_SUFFIX,
    HISTORY,
    NETWORK_METRIC,
    ORDER_METRIC,
    SERIES,
    SERIES_METRICS,
    ShopDetection,
    bot_events_get,
    daily_series_get,
    events_processed_position,
    hourly_series_get,
    orders_changed_get,
    orders_reference_get,
    rejections_hourly_get,
    rollups_updated_at,
    series_config,
    shop_detection_get,
    shopify_orders_tracking_get,
)
from analytics.services.anomalies import (
    AnomalyIn,
    anomalies_resolve_returned,
    anomalies_store,
)
from clickserver.params import local_midnight
from clickserver.sql import models_update
from events.models import Shop
from events.selectors import shop_backlog

logger = logging.getLogger(__name__)

# Hours (and days) re-judged on every run: late events reopen recent buckets.
HOURS_REJUDGED = timedelta(hours=48)
DAYS_REJUDGED = 3
# Orders placed longer ago than this are never alerted on, even when first seen now (an import).
ORDERS_RECENT = timedelta(days=7)
THRESHOLD_DETECTOR = "threshold"
# Orders placed this recently are not judged yet: the storefront's purchase event can reach us a
# little after Shopify's order webhook.
UNTRACKED_SETTLE = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class DetectionResult:
    opened: list[int]
    escalated: list[int]
    resolved: int
    bots_tagged: int
    orders_judged: int


@dataclass(frozen=True, slots=True)
class _Judged:
    found: list[AnomalyIn]
    # (metric, window start before which its active anomalies have returned to normal)
    returned: list[tuple[str, datetime]]
    # The newest value of each series metric (complete bucket, and in progress), for thresholds.
    latest: dict[str, tuple[datetime, datetime, float, bool]]


def _as_utc(at: pd.Timestamp, *, frequency: str, setup: ShopDetection) -> datetime:
    if frequency == DAY:
        return local_midnight(at.date(), setup.tz)
    return at.to_pydatetime().astimezone(UTC)


def _from_finding(finding: Finding, *, kind: str, setup: ShopDetection, frequency: str, **extra):
    return AnomalyIn(
        kind=kind,
        metric=finding.metric,
        window_start=_as_utc(finding.window_start, frequency=frequency, setup=setup),
        window_end=_as_utc(finding.window_end, frequency=frequency, setup=setup),
        observed=finding.observed,
        expected=finding.expected,
        band_low=finding.band.low,
        band_high=finding.band.high,
        score=finding.score,
        direction=str(finding.direction),
        severity=str(finding.severity),
        detector=finding.detector,
        explanation=finding.explanation,
        **extra,
    )


def _series_judge(
    setup: ShopDetection,
    series: pd.Series,
    *,
    name: str,
    frequency: str,
    config: SeasonalConfig,
    current: pd.Timestamp,
    rejudge_from: pd.Timestamp,
) -> _Judged:
    metric = f"{name}_{FREQUENCY_SUFFIX[frequency]}"
    kind = SERIES[name][0]
    frame = series_baseline(series, config=config)
    step = pd.Timedelta(hours=1) if frequency == HOUR else pd.Timedelta(days=1)
    found = []
    flagged = frame["speaks"] & (frame["score"].abs() >= config.threshold)
    for at in frame.index[flagged.to_numpy() & (frame.index >= rejudge_from)]:
        row = frame.loc[at]
        in_progress = at == current
        # The bucket in progress only grows: a spike so far is a spike; a drop (or a rate,
        # which moves either way) waits for the bucket to end.
        if in_progress and (row["score"] < 0 or name == "conversion_rate"):
            continue
        if at > current:
            continue
        finding = finding_build(
            metric=metric,
            detector="hour_of_week_mad" if frequency == HOUR else "day_of_week_mad",
            start=at,
            observed=row["observed"],
            expected=row["expected"],
            band=_band(row),
            score=row["score"],
            config=config,
        )
        if name == "conversion_rate":
            # A rate reads as a percentage ("2.1 %"), not as 0.0211.
            when, usual_for = window_phrase(at, frequency=frequency)
            finding = replace(
                finding,
                explanation=(
                    f"{config.label} {when} was {row['observed'] * 100:.1f} %, against the usual "
                    f"{row['expected'] * 100:.1f} % for {usual_for}."
                ),
            )
        if in_progress:
            finding = replace(
                finding, explanation=finding.explanation[:-1] + " so far (not over yet)."
            )
        found.append(
            _from_finding(
                finding,
                kind=kind,
                setup=setup,
                frequency=frequency,
                details={"frequency": frequency, "in_progress": bool(in_progress)},
            )
        )
    returned = []
    latest = {}
    complete = current - step
    if complete in frame.index:
        row = frame.loc[complete]
        if row["speaks"] and abs(row["score"]) < config.threshold:
            returned.append((metric, _as_utc(complete, frequency=frequency, setup=setup)))
        if np.isfinite(row["observed"]):
            start = _as_utc(complete, frequency=frequency, setup=setup)
            latest[metric] = (start, start + step.to_pytimedelta(), float(row["observed"]), False)
    if current in frame.index and np.isfinite(frame.loc[current, "observed"]):
        start = _as_utc(current, frequency=frequency, setup=setup)
        latest[metric + ":now"] = (
            start,
            start + step.to_pytimedelta(),
            float(frame.loc[current, "observed"]),
            True,
        )
    return _Judged(found=found, returned=returned, latest=latest)


def _band(row: pd.Series) -> Band:
    return Band(low=float(row["low"]), high=float(row["high"]))


def _series_detect(setup: ShopDetection, *, now: datetime, usual_order: float) -> _Judged:
    tz = setup.tz
    end = hour_floor(now) + ONE_HOUR
    start = hour_floor(now) - HISTORY
    hourly = hourly_series_get(shop=setup.shop, start=start, end=end)
    today = local_date(now, tz)
    daily = daily_series_get(
        shop=setup.shop,
        first=local_date(start, tz) + timedelta(days=1),
        last=today,
        hourly=hourly,
    )
    current_hour = pd.Timestamp(hour_floor(now)).tz_convert(tz)
    judged = _Judged(found=[], returned=[], latest={})
    for frequency, frame, current, rejudge_from in (
        (HOUR, hourly, current_hour, current_hour - pd.Timedelta(HOURS_REJUDGED)),
        (
            DAY,
            daily,
            pd.Timestamp(today),
            pd.Timestamp(today) - pd.Timedelta(days=DAYS_REJUDGED),
        ),
    ):
        for name in SERIES:
            config = series_config(setup, name=name, frequency=frequency, usual_order=usual_order)
            one = _series_judge(
                setup,
                frame[name],
                name=name,
                frequency=frequency,
                config=config,
                current=current,
                rejudge_from=rejudge_from,
            )
            judged.found.extend(one.found)
            judged.returned.extend(one.returned)
            judged.latest.update(one.latest)
    judged.found.extend(_health_series(setup, hourly=hourly, daily=daily, now=now))
    untracked = _untracked_orders_detect(setup, now=now)
    judged.found.extend(untracked)
    if not untracked:
        # Neither yesterday nor today fires: the orders are tracked again.
        judged.returned.append((UNTRACKED_ORDERS, now))
    return judged


def _untracked_orders_detect(setup: ShopDetection, *, now: datetime) -> list[AnomalyIn]:
    """Shopify orders without a tracked purchase, per shop-local day: yesterday whole and
    today up to `UNTRACKED_SETTLE` ago (the snippet's purchase may follow the webhook by a
    moment). Today's row keeps its window start, so later runs update it."""
    today = local_date(now, setup.tz)
    found = []
    for day in (today - timedelta(days=1), today):
        start = local_midnight(day, setup.tz)
        end = min(local_midnight(day + timedelta(days=1), setup.tz), now - UNTRACKED_SETTLE)
        if end <= start:
            continue
        orders, tracked = shopify_orders_tracking_get(shop_id=setup.shop.pk, start=start, end=end)
        finding = orders_untracked_check(
            shopify_order_ids=orders,
            tracked_order_ids=tracked,
            window_start=pd.Timestamp(start).tz_convert(setup.tz),
            window_end=pd.Timestamp(end).tz_convert(setup.tz),
            config=setup.health,
        )
        if finding is not None:
            untracked = sorted(set(orders) - set(tracked))
            found.append(
                _from_finding(
                    finding,
                    kind=AnomalyKind.HEALTH,
                    setup=setup,
                    frequency=HOUR,
                    details={
                        "orders": len(orders),
                        "untracked": len(untracked),
                        "examples": untracked[:10],
                    },
                )
            )
    return found


def _health_series(
    setup: ShopDetection, *, hourly: pd.DataFrame, daily: pd.DataFrame, now: datetime
) -> list[AnomalyIn]:
    found = []
    today = local_date(now, setup.tz)
    complete_days = daily["events"].dropna()
    complete_days = complete_days[complete_days.index < pd.Timestamp(today)]
    if len(complete_days):
        for finding in days_without_events(
            complete_days,
            config=setup.health,
            start=pd.Timestamp(today) - pd.Timedelta(days=DAYS_REJUDGED),
        ):
            found.append(
                _from_finding(finding, kind=AnomalyKind.HEALTH, setup=setup, frequency=DAY)
            )
    end = hour_floor(now)
    start = end - timedelta(days=8)
    accepted, rejected = rejections_hourly_get(
        shop_id=setup.shop.pk, start=start, end=end, hourly=hourly
    )
    for finding in rejections_check(
        accepted=accepted,
        rejected=rejected,
        config=setup.health,
        start=pd.Timestamp(end - HOURS_REJUDGED),
    ):
        found.append(_from_finding(finding, kind=AnomalyKind.HEALTH, setup=setup, frequency=HOUR))
    return found


def _orders_detect(
    setup: ShopDetection, state: DetectionState, *, now: datetime, reference: pd.DataFrame
) -> tuple[list[AnomalyIn], int]:
    changed = orders_changed_get(
        shop_id=setup.shop.pk, since_us=state.orders_position, placed_after=now - ORDERS_RECENT
    )
    if changed.empty:
        return [], 0
    state.orders_position = int(changed["updated_at_us"].max())
    orders = changed[["order_id", "placed_at", "value"]].copy()
    # The sentence names the order's time in the shop's timezone, as the series' hours are.
    orders["placed_at"] = pd.to_datetime(orders["placed_at"], utc=True).dt.tz_convert(setup.tz)
    findings = orders_detect(
        orders,
        config=setup.orders,
        reference=reference if len(reference) else None,
    )
    found = [
        AnomalyIn(
            kind=AnomalyKind.ORDER,
            metric=ORDER_METRIC,
            subject=f"{finding.order_id}:cancelled"
            if finding.is_cancellation
            else finding.order_id,
            window_start=finding.placed_at.to_pydatetime(),
            window_end=finding.placed_at.to_pydatetime(),
            observed=finding.value,
            expected=finding.expected if np.isfinite(finding.expected) else None,
            band_low=finding.band.low,
            band_high=finding.band.high,
            score=finding.score if np.isfinite(finding.score) else None,
            direction=str(Direction.SPIKE),
            severity=str(finding.severity),
            detector=ORDER_METRIC,
            explanation=finding.explanation,
            details={"order_id": finding.order_id, "reasons": list(finding.reasons)},
        )
        for finding in findings
    ]
    return found, len(changed)


def _bots_detect(
    setup: ShopDetection, state: DetectionState, *, now: datetime
) -> tuple[list[AnomalyIn], int]:
    """Tag the people the bot detector finds (BotTag) and report each as an anomaly per day."""
    upto = events_processed_position(shop_id=setup.shop.pk)
    if upto <= state.events_position:
        return [], 0
    events = bot_events_get(
        shop_id=setup.shop.pk, after_id=state.events_position, upto_id=upto, now=now
    )
    state.events_position = upto
    if events.empty:
        return [], 0
    found: list[AnomalyIn] = []
    tags: list[BotTagIn] = []
    tagged_people: list[int] = []
    network_people: list[int] = []
    for finding in events_detect_bots(events, config=setup.bots):
        day = local_midnight(local_date(finding.first_at.to_pydatetime(), setup.tz), setup.tz)
        reasons = [reason.code for reason in finding.reasons]
        details = {
            "reasons": [
                {"code": r.code, "observed": r.observed, "limit": r.limit, "detail": r.detail}
                for r in finding.reasons
            ],
            "event_count": finding.event_count,
            "session_count": len(finding.session_ids),
            "excluded_from_analytics": setup.exclude_bots
            if finding.entity == "person"
            else setup.exclude_shared_networks,
        }
        if finding.entity == "person":
            tags.append(
                BotTagIn(
                    person_id=int(finding.entity_id),
                    reasons=reasons,
                    session_ids=[int(s) for s in finding.session_ids if s.isdigit()],
                    event_count=finding.event_count,
                    first_at=finding.first_at.to_pydatetime(),
                    last_at=finding.last_at.to_pydatetime(),
                )
            )
            tagged_people.append(int(finding.entity_id))
        else:
            details["person_count"] = len(finding.person_ids)
            network_people += network_tag_upsert(
                shop_id=setup.shop.pk,
                network=finding.entity_id,
                person_ids=[int(p) for p in finding.person_ids if p.isdigit()],
                session_ids=[int(s) for s in finding.session_ids if s.isdigit()],
                event_count=finding.event_count,
                first_at=finding.first_at.to_pydatetime(),
                last_at=finding.last_at.to_pydatetime(),
                now=now,
            )
        found.append(
            AnomalyIn(
                kind=AnomalyKind.BOT,
                metric=BOT_METRIC if finding.entity == "person" else NETWORK_METRIC,
                subject=f"{finding.entity}:{finding.entity_id}",
                window_start=day,
                window_end=local_midnight(local_date(day, setup.tz) + timedelta(days=1), setup.tz),
                observed=float(finding.event_count),
                expected=None,
                band_low=None,
                band_high=None,
                score=None,
                direction=str(Direction.SPIKE),
                severity=str(finding.severity),
                detector="bots",
                explanation=finding.explanation,
                details=details,
            )
        )
    bot_tags_upsert(shop_id=setup.shop.pk, tags=tags, now=now)
    recompute = (tagged_people if setup.exclude_bots else []) + (
        network_people if setup.exclude_shared_networks else []
    )
    if recompute:
        bot_days_recompute_schedule(shop=setup.shop, person_ids=sorted(set(recompute)))
    return found, len(tagged_people)


def bot_days_recompute_schedule(*, shop: Shop, person_ids: list[int]) -> list[str]:
    """Once the transaction commits, recompute the rollup days these (newly tagged or
    untagged) people's sessions touch, through the erasure's path (`rollups_days_recompute`):
    the rollups then leave them out, or take them back. Returns the ISO days."""
    from analytics.tasks import rollups_days_recompute_task

    days = [
        day.isoformat()
        for day in bot_days_get(shop_id=shop.pk, person_ids=person_ids, tz=ZoneInfo(shop.timezone))
    ]
    if days:
        transaction.on_commit(lambda: rollups_days_recompute_task.delay(shop.pk, days))
    return days


@dataclass(frozen=True, slots=True)
class BotTagIn:
    """A person the bot detector found in this run."""

    person_id: int
    reasons: list[str]
    session_ids: list[int]
    event_count: int
    first_at: datetime
    last_at: datetime


# People read and written per statement (a run over a bot farm tags thousands).
TAG_CHUNK = 500
TAG_MERGED_FIELDS = ["reasons", "session_ids", "event_count", "first_at", "last_at", "tagged_at"]


def bot_tags_upsert(*, shop_id: int, tags: list[BotTagIn], now: datetime) -> int:
    """Tag people as bots, merging reasons and sessions with their earlier tags; returns how
    many were tagged for the first time.

    In chunks of people: one locking read of their earlier tags, one insert, one update (row at
    a time, 5,000 people took 15 s of a detection run). A person twice in `tags` is merged."""
    merged: dict[int, BotTagIn] = {}
    for tag in tags:
        merged[tag.person_id] = (
            _bot_tag_merge(merged[tag.person_id], tag) if tag.person_id in merged else tag
        )
    created = 0
    person_ids = sorted(merged)
    with transaction.atomic():
        for chunk_start in range(0, len(person_ids), TAG_CHUNK):
            chunk = person_ids[chunk_start : chunk_start + TAG_CHUNK]
            earlier = {
                row.person_id: row
                for row in BotTag.objects.select_for_update().filter(
                    shop_id=shop_id, person_id__in=chunk
                )
            }
            new_rows, changed = [], []
            for person_id in chunk:
                tag, row = merged[person_id], earlier.get(person_id)
                if row is None:
                    new_rows.append(
                        BotTag(
                            shop_id=shop_id,
                            person_id=person_id,
                            reasons=sorted(set(tag.reasons)),
                            session_ids=sorted(set(tag.session_ids)),
                            event_count=tag.event_count,
                            first_at=tag.first_at,
                            last_at=tag.last_at,
                            tagged_at=now,
                        )
                    )
                    continue
                row.reasons = sorted(set(row.reasons) | set(tag.reasons))
                row.session_ids = sorted(set(row.session_ids) | set(tag.session_ids))
                row.event_count = max(row.event_count, tag.event_count)
                row.first_at, row.last_at = (
                    min(row.first_at, tag.first_at),
                    max(row.last_at, tag.last_at),
                )
                row.tagged_at = now
                changed.append(row)
            BotTag.objects.bulk_create(new_rows)
            models_update(BotTag, changed, fields=TAG_MERGED_FIELDS)
            created += len(new_rows)
    return created


def _bot_tag_merge(first: BotTagIn, second: BotTagIn) -> BotTagIn:
    return BotTagIn(
        person_id=first.person_id,
        reasons=sorted(set(first.reasons) | set(second.reasons)),
        session_ids=sorted(set(first.session_ids) | set(second.session_ids)),
        event_count=max(first.event_count, second.event_count),
        first_at=min(first.first_at, second.first_at),
        last_at=max(first.last_at, second.last_at),
    )


def network_tag_upsert(
    *,
    shop_id: int,
    network: str,
    person_ids: list[int],
    session_ids: list[int],
    event_count: int,
    first_at: datetime,
    last_at: datetime,
    now: datetime,
) -> list[int]:
    """Record a shared network with the people and sessions seen on it, merged with an earlier
    record; returns the people it did not hold yet (whose days change when the shop excludes
    shared networks)."""
    tag = NetworkTag.objects.select_for_update().filter(shop_id=shop_id, network=network).first()
    if tag is None:
        NetworkTag.objects.create(
            shop_id=shop_id,
            network=network,
            person_ids=sorted(set(person_ids)),
            session_ids=sorted(set(session_ids)),
            event_count=event_count,
            first_at=first_at,
            last_at=last_at,
            tagged_at=now,
        )
        return sorted(set(person_ids))
    new_people = sorted(set(person_ids) - set(tag.person_ids))
    tag.person_ids = sorted(set(tag.person_ids) | set(person_ids))
    tag.session_ids = sorted(set(tag.session_ids) | set(session_ids))
    tag.event_count = max(tag.event_count, event_count)
    tag.first_at, tag.last_at = min(tag.first_at, first_at), max(tag.last_at, last_at)
    tag.tagged_at = now
    tag.save()
    return new_people


def _lag_detect(setup: ShopDetection, *, now: datetime) -> tuple[list[AnomalyIn], bool]:
    """(the pipeline-lag anomaly if any, whether the pipeline is caught up)."""
    backlog = shop_backlog(shop_id=setup.shop.pk)
    oldest = backlog.oldest_unprocessed_at
    lag = (now - oldest).total_seconds() if oldest is not None else 0.0
    finding = pipeline_lag_check(lag_seconds=lag, at=pd.Timestamp(now), config=setup.health)
    if finding is None or oldest is None:
        return [], True
    item = _from_finding(finding, kind=AnomalyKind.HEALTH, setup=setup, frequency=HOUR)
    # One anomaly per stuck event: the window starts at the oldest unprocessed one.
    return [replace(item, window_start=oldest.replace(microsecond=0), window_end=now)], False


def _thresholds_detect(
    *, shop_id: int, latest: dict[str, tuple[datetime, datetime, float, bool]]
) -> list[AnomalyIn]:
    """Threshold rules: a metric's newest bucket above (or, once complete, below) the value."""
    found = []
    rules = AlertRule.objects.filter(shop_id=shop_id, is_active=True).exclude(threshold_metric="")
    for rule in rules:
        if rule.threshold_value is None or rule.threshold_metric not in SERIES_METRICS:
            continue
        above = rule.threshold_direction != "below"
        # Above: the bucket in progress counts (it only grows); below: the complete one.
        key = rule.threshold_metric + (":now" if above else "")
        if key not in latest:
            continue
        start, end, value, in_progress = latest[key]
        crossed = value > rule.threshold_value if above else value < rule.threshold_value
        if not crossed:
            continue
        word = "above" if above else "below"
        found.append(
            AnomalyIn(
                kind=AnomalyKind.THRESHOLD,
                metric=rule.threshold_metric,
                subject=f"rule:{rule.pk}",
                window_start=start,
                window_end=end,
                observed=value,
                expected=rule.threshold_value,
                band_low=None if above else rule.threshold_value,
                band_high=rule.threshold_value if above else None,
                score=None,
                direction=str(Direction.SPIKE if above else Direction.DROP),
                severity=rule.min_severity,
                detector=THRESHOLD_DETECTOR,
                explanation=(
                    f"{rule.threshold_metric.replace('_', ' ').capitalize()} from "
                    f"{start:%-d %b %H:%M} UTC {'is' if in_progress else 'was'} {value:,.2f}, "
                    f"{word} the rule \u201c{rule.name}\u201d's {rule.threshold_value:,.2f}."
                ),
                details={"rule_id": rule.pk, "in_progress": in_progress},
            )
        )
    return found


def anomalies_detect(*, shop_id: int, now: datetime) -> DetectionResult:
    """Run every detector for the shop and store the findings; alerts follow on commit."""
    shop = Shop.objects.get(pk=shop_id)
    setup = shop_detection_get(shop=shop)
    with transaction.atomic():
        DetectionState.objects.get_or_create(shop_id=shop_id)
        # One detection per shop at a time: the dedup reads then writes.
        state = DetectionState.objects.select_for_update().get(shop_id=shop_id)
        marked = rollups_updated_at(shop_id=shop_id)
        reference = orders_reference_get(shop_id=shop_id, now=now)
        usual_order = float(np.median(reference["value"])) if len(reference) else 1.0
        judged = _series_detect(setup, now=now, usual_order=usual_order)
        orders_found, orders_judged = _orders_detect(setup, state, now=now, reference=reference)
        bots_found, tagged = _bots_detect(setup, state, now=now)
        lag_found, caught_up = _lag_detect(setup, now=now)
        found = [
            *judged.found,
            *orders_found,
            *bots_found,
            *lag_found,
            *_thresholds_detect(shop_id=shop_id, latest=judged.latest),
        ]
        stored = anomalies_store(shop_id=shop_id, found=found, now=now)
        resolved = 0
        for metric, before in judged.returned:
            resolved += anomalies_resolve_returned(
                shop_id=shop_id,
                metric=metric,
                before=before,
                now=now,
                reason="the metric returned inside its band",
            )
        if caught_up:
            resolved += anomalies_resolve_returned(
                shop_id=shop_id,
                metric="pipeline_lag",
                before=now,
                now=now,
                reason="the pipeline caught up",
            )
        state.rollups_at = marked
        state.detected_at = now
        state.save()
        to_alert = stored.opened + stored.escalated
        if to_alert:
            transaction.on_commit(lambda: alerts_dispatch_schedule(anomaly_ids=to_alert))
    return DetectionResult(
        opened=stored.opened,
        escalated=stored.escalated,
        resolved=resolved,
        bots_tagged=tagged,
        orders_judged=orders_judged,
    )


def alerts_dispatch_schedule(*, anomaly_ids: list[int]) -> None:
    # Imported here: the tasks module imports this one (the ingestion service does the same).
    from analytics.tasks import alerts_dispatch_task

    alerts_dispatch_task.delay(anomaly_ids)


# The debounce of `anomalies_detect_schedule`: one detection per shop per this many seconds.
DETECT_DEBOUNCE_SECONDS = 10


DETECT_RUNNING_SECONDS = 600


def detection_run_claim(*, shop_id: int) -> bool:
    """One detection at a time per shop: True when this run may go (and marks it running).

    A busy shop's detection can take longer than the debounce (bot detection over thousands of
    hyperactive visitors took 10-35 s on the campaign latency bench); two runs at once on a
    two-process worker held both processes and stalled every other stage behind them. The mark
    expires after DETECT_RUNNING_SECONDS should a worker die mid-run. Redis down: run.
    """
    try:
        return bool(cache.add(f"analytics:detect-running:{shop_id}", 1, DETECT_RUNNING_SECONDS))
    except RedisError:
        return True


def detection_run_release(*, shop_id: int) -> None:
    try:
        cache.delete(f"analytics:detect-running:{shop_id}")
    except RedisError:
        logger.warning("could not clear the running mark of shop %s's detection", shop_id)


def anomalies_detect_schedule(*, shop_id: int) -> None:
    """Ask a worker to run detection soon; refreshes within the debounce share one run, which
    starts after the window so that it sees all of them."""
    from analytics.tasks import anomalies_detect_task

    try:
        if not cache.add(f"analytics:detect-scheduled:{shop_id}", 1, DETECT_DEBOUNCE_SECONDS):
            return
    except RedisError:
        # Redis down: send anyway; a second detection in the window finds nothing new.
        pass
    try:
        anomalies_detect_task.apply_async((shop_id,), countdown=DETECT_DEBOUNCE_SECONDS)
    except BrokerError:
        # The rollups are stored; the beat sweep detects once the broker is back.
        logger.warning("broker unavailable; detection for shop %s waits for the sweep", shop_id)
