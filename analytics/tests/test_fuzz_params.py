"""Property tests: any query string gives a parsed query or a 400 in the envelope, never a 500.

Hypothesis draws every parameter the analytics endpoints read (dates at the calendar's edges
included, integers as text, JSON step filters, any Unicode) for the shared parser
(analytics/params.py) and through the endpoints themselves.
"""

import re
from types import SimpleNamespace

import orjson
import pytest
from django.http import QueryDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.params import (
    STEPS_PATTERN,
    funnel_params_parse,
    interval_parse,
    query_parse,
)
from analytics.selectors.funnels import FunnelParams
from clickserver.errors import ApplicationError
from clickserver.params import MAX_DAYS

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db]

TEXT = st.text(max_size=30)
# The calendar's edges explicitly: a period computed back or forward from them must not overflow.
DATES = (
    st.sampled_from(["0001-01-01", "0001-01-30", "9999-12-31"])
    | st.dates().map(lambda d: d.isoformat())
    | TEXT
)
INTEGERS = st.integers().map(str) | TEXT
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=8,
)
STEP_FILTERS = JSON.map(lambda value: orjson.dumps(value).decode()) | TEXT
PERIOD_PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "start": DATES,
        "end": DATES,
        "compare": st.sampled_from(["", "previous"]) | TEXT,
        "utm_source": TEXT,
        "device": TEXT,
        "country": TEXT,
    },
)
FUNNEL_PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "steps": st.lists(st.sampled_from(["page_view", "add_to_cart", "purchase"]) | TEXT).map(
            ",".join
        )
        | TEXT,
        "step_filters": STEP_FILTERS,
        "unit": st.sampled_from(["session", "person"]) | TEXT,
        "breakdown": st.sampled_from(["", "utm_source", "device", "country"]) | TEXT,
        "mode": st.sampled_from(["ordered", "strict"]) | TEXT,
        "window": INTEGERS,
    },
)
ENDPOINT_PARAMS = st.fixed_dictionaries(
    {
        "endpoint": st.sampled_from(
            ["session_count", "kpis", "trends", "products", "funnel", "live"]
        )
    },
    optional={
        "start": DATES,
        "end": DATES,
        "compare": TEXT,
        "interval": st.sampled_from(["hour", "day", "week", "month"]) | TEXT,
        "limit": INTEGERS,
        "since_id": INTEGERS,
        "order_by": TEXT,
        "steps": st.just("page_view,purchase") | TEXT,
        "step_filters": STEP_FILTERS,
        "window": INTEGERS,
    },
)
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
HTTP_FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _query_dict(params: dict[str, str]) -> QueryDict:
    query = QueryDict(mutable=True)
    for name, value in params.items():
        query[name] = value
    return query


def _assert_invalid(error: ApplicationError, params: dict[str, str]) -> None:
    assert (error.status, error.code) == (400, "invalid")
    assert set(error.fields) <= set(params) | {"steps", "start"}


@FUZZ
@given(params=PERIOD_PARAMS)
def test_period_parser_parses_or_answers_400(user, shop, params, fuzz_cases):
    fuzz_cases["test_period_parser_parses_or_answers_400"] += 1
    request = SimpleNamespace(query_params=_query_dict(params), user=user)

    try:
        query, compare = query_parse(request)
    except ApplicationError as error:
        _assert_invalid(error, params)
        return

    assert query.shop == shop
    assert query.period.first <= query.period.last
    assert (query.period.last - query.period.first).days < MAX_DAYS
    assert compare is (params.get("compare") == "previous")


@FUZZ
@given(params=FUNNEL_PARAMS, interval=TEXT)
def test_funnel_and_interval_parsers_parse_or_answer_400(params, interval, fuzz_cases):
    fuzz_cases["test_funnel_and_interval_parsers_parse_or_answer_400"] += 1
    try:
        funnel = funnel_params_parse(_query_dict(params))
    except ApplicationError as error:
        _assert_invalid(error, params)
    else:
        assert isinstance(funnel, FunnelParams)
        assert 2 <= len(funnel.steps) <= 10

    try:
        parsed = interval_parse(_query_dict({"interval": interval}))
    except ApplicationError as error:
        _assert_invalid(error, {"interval": interval})
    else:
        assert parsed in ("hour", "day", "week", "month")


@HTTP_FUZZ
@given(params=ENDPOINT_PARAMS)
def test_analytics_endpoints_answer_200_or_400(api_client, shop, params, fuzz_cases):
    fuzz_cases["test_analytics_endpoints_answer_200_or_400"] += 1
    endpoint = params.pop("endpoint")

    response = api_client.get(f"/analytics/{endpoint}/", {"shop": shop.domain, **params})

    assert response.status_code in (200, 400), (response.status_code, response.content[:300])
    if response.status_code == 400:
        assert set(response.json()) == {"code", "detail", "fields"}


@FUZZ
@given(steps=st.text(alphabet="ab, \t\n\u3000", max_size=40) | TEXT)
def test_the_schema_steps_pattern_matches_what_the_funnel_parser_accepts(steps, fuzz_cases):
    # The schema at /api/schema/ states `steps` by this pattern: clients and schemathesis take
    # whatever it matches as valid, and whatever it does not as a request that must fail.
    fuzz_cases["test_the_schema_steps_pattern_matches_what_the_funnel_parser_accepts"] += 1
    try:
        funnel_params_parse(_query_dict({"steps": steps}))
    except ApplicationError:
        accepted = False
    else:
        accepted = True

    assert bool(re.search(STEPS_PATTERN, steps)) is accepted
