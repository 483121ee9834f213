"""Age bands from identify traits; no DB."""

from datetime import date

import pytest

from events.traits import AGE_BANDS, age_band, trait_age

TODAY = date(2026, 3, 1)


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (17, ""),
        (18, "18-25"),
        (25, "18-25"),
        (25.9, "18-25"),
        (26, "26-35"),
        (35, "26-35"),
        (36, "36-45"),
        (45, "36-45"),
        (46, "46-55"),
        (55, "46-55"),
        (56, "56-65"),
        (65, "56-65"),
        (66, "66+"),
        (120, "66+"),
        (121, ""),
        ("40", "36-45"),
        (" 66 ", "66+"),
        ("forty", ""),
        (True, ""),
        (None, ""),
    ],
)
def test_stated_age_bands_at_every_edge(age, band):
    assert age_band({"age": age}, today=TODAY) == band


@pytest.mark.parametrize(
    ("born", "band"),
    [
        ("2008-03-01", "18-25"),  # 18 today
        ("2008-03-02", ""),  # 18 tomorrow
        ("2000-03-02", "18-25"),  # 25 until tomorrow
        ("2000-03-01", "26-35"),  # 26 today
        ("1960-02-29", "66+"),
        ("1990-06-15T00:00:00Z", "26-35"),
        ("1900-01-01", ""),  # a placeholder
        ("2030-01-01", ""),  # in the future
        ("15/06/1990", ""),  # not ISO
    ],
)
def test_birth_date_gives_whole_years_on_the_day(born, band):
    assert age_band({"birth_date": born}, today=TODAY) == band
    assert age_band({"birthday": born}, today=TODAY) == band


def test_a_stated_age_wins_and_nothing_gives_no_band():
    assert age_band({"age": 30, "birth_date": "1950-01-01"}, today=TODAY) == "26-35"
    assert age_band({"age": "n/a", "birthday": "1950-01-01"}, today=TODAY) == "66+"
    assert trait_age({}, today=TODAY) is None
    assert age_band(None, today=TODAY) == ""
    assert len(set(AGE_BANDS)) == 6
