"""Shop-local calendar days mapped to half-open UTC ranges, and UTC hours back to local time."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from clickserver.params import local_midnight

HOUR = timedelta(hours=1)
MICROSECOND = timedelta(microseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A session lasts at most 24 h after its start (plus the inactivity timeout of its last event),
# so its events lie within this much of its start.
SESSION_SPAN = timedelta(hours=25)


@dataclass(frozen=True, slots=True)
class Period:
    """Local days `first..last` (inclusive) of a shop, as the UTC range `[start, end)`."""

    first: date
    last: date
    tz: ZoneInfo

    @property
    def start(self) -> datetime:
        return local_midnight(self.first, self.tz)

    @property
    def end(self) -> datetime:
        return local_midnight(self.last + timedelta(days=1), self.tz)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def previous(self) -> "Period":
        """The period of equal length that ends the day before this one starts."""
        return Period(
            first=self.first - timedelta(days=self.days),
            last=self.first - timedelta(days=1),
            tz=self.tz,
        )


def hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_ceil(moment: datetime) -> datetime:
    floor = hour_floor(moment)
    return floor if floor == moment else floor + HOUR


def local_date(moment: datetime, tz: ZoneInfo) -> date:
    return moment.astimezone(tz).date()


def day_of(hour: datetime, period: Period) -> date:
    """The local day of an hour bucket; an hour straddling the period start counts in it."""
    return local_date(max(hour, period.start), period.tz)


def day_runs(days: Iterable[date]) -> Iterator[tuple[date, date]]:
    """Contiguous runs `(first, last)` of the given days, so each run is recomputed in one pass."""
    ordered = sorted(set(days))
    if not ordered:
        return
    first = previous = ordered[0]
    for day in ordered[1:]:
        if day - previous > timedelta(days=1):
            yield first, previous
            first = day
        previous = day
    yield first, previous
