"""Query-string parsing shared by the analytics endpoints: errors come out in the API envelope."""

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from django.http import QueryDict
from django.utils import timezone

from analytics.funnel_levels import StepSpec
from analytics.models import AnomalyKind, AnomalyStatus, Severity
from analytics.periods import Period
from analytics.selectors.anomalies import AnomalyFilters
from analytics.selectors.detection import METRICS
from analytics.selectors.funnels import FunnelParams
from analytics.selectors.query import BREAKDOWNS, Filters, Query
from analytics.selectors.reports import KINDS as REPORT_KINDS
from clickserver.params import EARLIEST_DAY, invalid, local_midnight, period_days_parse
from events.selectors import shop_get_for_user

MAX_WINDOW_SECONDS = 90 * 24 * 3600
INTERVALS = ("hour", "day", "week", "month")
PRODUCT_ORDERS = ("views", "carts", "purchases", "revenue", "abandoned_carts", "units")
# What `funnel_params_parse` accepts as `steps`, for the schema: 2 to 10 comma-separated items
# that are not blank after stripping, blank items anywhere in between (they are skipped).
_STEP = r"\s*[^\s,][^,]*"
STEPS_PATTERN = rf"^(?:\s*,)*(?:{_STEP},(?:\s*,)*){{1,9}}{_STEP}(?:,\s*)*$"


def int_param(params: QueryDict, name: str, *, default: int, low: int, high: int) -> int:
    # Absent means the default; present and empty is not a number (nor is "1.5" or " 1").
    value = params.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise invalid(name, "expected an integer") from None
    if not low <= number <= high:
        raise invalid(name, f"must be between {low} and {high}")
    return number


def choice_param(params: QueryDict, name: str, choices: tuple[str, ...], default: str) -> str:
    value = params.get(name, default)
    if value not in choices:
        raise invalid(name, f"must be one of {', '.join(choices)}")
    return value


def query_parse(request: Any) -> tuple[Query, bool]:
    """The shop (404 unless the user is a member), local-day period, filters and compare flag."""
    params = request.query_params
    shop = shop_get_for_user(user=request.user, domain=params.get("shop"))
    tz = ZoneInfo(shop.timezone)
    start, end = period_days_parse(params, today=timezone.now().astimezone(tz).date())
    filters = Filters(**{name: params.get(name, "") for name in BREAKDOWNS})
    compare = choice_param(params, "compare", ("", "previous"), "") == "previous"
    return Query(shop=shop, period=Period(first=start, last=end, tz=tz), filters=filters), compare


def funnel_params_parse(params: QueryDict) -> FunnelParams:
    names = [name.strip() for name in (params.get("steps") or "").split(",") if name.strip()]
    if not 2 <= len(names) <= 10:
        raise invalid("steps", "give 2 to 10 comma-separated event types")
    try:
        raw_filters = orjson.loads(params.get("step_filters") or "{}")
    except orjson.JSONDecodeError:
        raise invalid("step_filters", "expected JSON") from None
    if isinstance(raw_filters, dict):
        # {"0": {"category": "shoes"}} or {"product_view": {...}}: by position or by step name.
        raw_filters = [raw_filters.get(str(i)) or raw_filters.get(n) for i, n in enumerate(names)]
    if not isinstance(raw_filters, list) or not all(
        f is None or isinstance(f, dict) for f in raw_filters
    ):
        raise invalid("step_filters", "expected a list or object of property filters")
    raw_filters = (raw_filters + [None] * len(names))[: len(names)]
    steps = tuple(
        StepSpec(event_type=name, filters=tuple(sorted((f or {}).items())))
        for name, f in zip(names, raw_filters, strict=True)
    )
    unit = choice_param(params, "unit", ("session", "person"), "session")
    breakdown = choice_param(params, "breakdown", ("", *BREAKDOWNS), "")
    if breakdown and unit != "session":
        raise invalid("breakdown", "breakdown is available for session funnels")
    window = params.get("window")
    return FunnelParams(
        steps=steps,
        unit=unit,
        strict=choice_param(params, "mode", ("ordered", "strict"), "ordered") == "strict",
        window=None
        if window is None
        else int_param(params, "window", default=0, low=0, high=MAX_WINDOW_SECONDS),
        breakdown=breakdown,
    )


def interval_parse(params: QueryDict) -> str:
    return choice_param(params, "interval", INTERVALS, "day")


def report_params_parse(params: QueryDict) -> tuple[str, date]:
    """`kind` (daily/weekly) and `day` (YYYY-MM-DD, required) of a report preview."""
    kind = choice_param(params, "kind", REPORT_KINDS, "daily")
    value = params.get("day")
    if not value:
        raise invalid("day", "required (YYYY-MM-DD)")
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise invalid("day", "expected YYYY-MM-DD") from None
    if day < EARLIEST_DAY:
        raise invalid("day", f"must not be before {EARLIEST_DAY}")
    return kind, day


def _csv_choices(params: QueryDict, name: str, choices: tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list of allowed values (a name outside `choices` is a 400)."""
    raw = params.get(name)
    if not raw:
        return ()
    values = tuple(dict.fromkeys(item.strip() for item in raw.split(",") if item.strip()))
    unknown = [value for value in values if value not in choices]
    if unknown:
        raise invalid(name, f"unknown {', '.join(unknown)}; expected some of {', '.join(choices)}")
    return values


def _instant(params: QueryDict, name: str, *, tz: ZoneInfo) -> datetime | None:
    """An ISO date (the shop-local midnight) or date-time (naive: the shop's timezone)."""
    raw = params.get(name)
    if not raw:
        return None
    try:
        if len(raw) == 10:
            return local_midnight(date.fromisoformat(raw), tz)
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise invalid(name, "expected an ISO 8601 date or date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def anomaly_filters_parse(params: QueryDict, *, tz: ZoneInfo) -> AnomalyFilters:
    filters = AnomalyFilters(
        statuses=_csv_choices(params, "status", tuple(AnomalyStatus.values)),
        severities=_csv_choices(params, "severity", tuple(Severity.values)),
        kinds=_csv_choices(params, "kind", tuple(AnomalyKind.values)),
        metrics=_csv_choices(params, "metric", METRICS),
        since=_instant(params, "since", tz=tz),
        until=_instant(params, "until", tz=tz),
    )
    if filters.since and filters.until and filters.since >= filters.until:
        raise invalid("since", "must be before until")
    return filters
