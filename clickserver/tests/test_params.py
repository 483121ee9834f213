from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from clickserver.errors import ApplicationError
from clickserver.params import local_midnight, period_days_parse

TODAY = date(2026, 1, 10)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, (date(2025, 12, 12), date(2026, 1, 10))),
        ({"end": "2026-01-05"}, (date(2025, 12, 7), date(2026, 1, 5))),
        ({"start": "2026-01-01"}, (date(2026, 1, 1), date(2026, 1, 10))),
        ({"end": "2000-01-10"}, (date(2000, 1, 1), date(2000, 1, 10))),
        ({"start": "2000-01-01", "end": "2003-01-02"}, (date(2000, 1, 1), date(2003, 1, 2))),
        ({"start": "2027-01-11", "end": "2027-01-11"}, (date(2027, 1, 11), date(2027, 1, 11))),
    ],
)
def test_period_days_parse_accepts_days_within_the_bounds(params, expected):
    assert period_days_parse(params, today=TODAY) == expected


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"start": "2026-13-01"}, "start", "expected YYYY-MM-DD"),
        # Absent means the default; present and empty is not a date.
        ({"start": ""}, "start", "expected YYYY-MM-DD"),
        ({"end": "0001-01-01"}, "end", "must be between 2000-01-01 and 2027-01-11"),
        ({"start": "1999-12-31"}, "start", "must be between 2000-01-01 and 2027-01-11"),
        ({"end": "2027-01-12"}, "end", "must be between 2000-01-01 and 2027-01-11"),
        (
            {"start": "9999-12-01", "end": "9999-12-31"},
            "start",
            "must be between 2000-01-01 and 2027-01-11",
        ),
        ({"start": "2026-01-06", "end": "2026-01-05"}, "start", "must not be after end"),
        (
            {"start": "2000-01-01", "end": "2003-01-03"},
            "start",
            "the period is limited to 1098 days",
        ),
    ],
)
def test_period_days_parse_rejects_days_outside_the_bounds(params, field, message):
    with pytest.raises(ApplicationError) as raised:
        period_days_parse(params, today=TODAY)

    assert (raised.value.status, raised.value.detail, raised.value.fields) == (
        400,
        f"{field}: {message}",
        {field: [message]},
    )


def test_local_midnight_is_the_utc_instant_the_local_day_starts():
    berlin = ZoneInfo("Europe/Berlin")

    # Winter (UTC+1) and the day after the spring change (UTC+2).
    assert local_midnight(date(2026, 1, 10), berlin) == datetime(2026, 1, 9, 23, tzinfo=UTC)
    assert local_midnight(date(2026, 3, 30), berlin) == datetime(2026, 3, 29, 22, tzinfo=UTC)
