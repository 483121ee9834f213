"""The reporting period of a query string: one parser and one set of bounds for every endpoint.

Analytics, the dashboard pages and the segment tables all read `start`/`end` (shop-local ISO days,
both inclusive) through `period_days_parse`, so a period that one of them accepts is one that every
selector can turn into datetimes: far-off years would overflow `date + timedelta` or a timezone
conversion, and a decade-long span would scan every rollup of a shop.
"""

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from clickserver.errors import ApplicationError

DEFAULT_DAYS = 30
MAX_DAYS = 3 * 366
EARLIEST_DAY = date(2000, 1, 1)
# Today plus this many days is the latest day a period may reach (storefronts in far timezones,
# campaigns planned ahead); nothing is ever recorded beyond it.
LATEST_AHEAD_DAYS = 366


def invalid(name: str, message: str) -> ApplicationError:
    """A 400 in the envelope naming one query parameter."""
    return ApplicationError(f"{name}: {message}", code="invalid", fields={name: [message]})


def _day(params: Mapping[str, str], name: str, *, latest: date) -> date | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise invalid(name, "expected YYYY-MM-DD") from None
    if not EARLIEST_DAY <= day <= latest:
        raise invalid(name, f"must be between {EARLIEST_DAY} and {latest}")
    return day


def period_days_parse(params: Mapping[str, str], *, today: date) -> tuple[date, date]:
    """The local days `(first, last)` of `start`/`end`, by default the 30 days up to today."""
    latest = today + timedelta(days=LATEST_AHEAD_DAYS)
    start = _day(params, "start", latest=latest)
    end = _day(params, "end", latest=latest) or today
    start = start or max(EARLIEST_DAY, end - timedelta(days=DEFAULT_DAYS - 1))
    if start > end:
        raise invalid("start", "must not be after end")
    if (end - start).days >= MAX_DAYS:
        raise invalid("start", f"the period is limited to {MAX_DAYS} days")
    return start, end


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The UTC instant a shop-local day starts at: the bound of a half-open `[start, end)`."""
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)
