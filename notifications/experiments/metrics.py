"""Reads for the analysis: who is analysed, and each analysed unit's metric values.

Reads only, in a handful of set-based queries whose results are small except the first: the
phase's exposure rows (one per exposed unit, datetimes as epoch microseconds so that pandas
converts a million in one pass); then, per exposure row, the sums of its orders and counted events
after exposure and in the pre-exposure window, computed by the database (a join from the shop's
orders or events in the phase's time range to the exposure rows of their person, grouped by
exposure row: only units with activity come back); and the exposure rows whose first session is a
bounce. Nothing is read per unit and no event outside the phase's time range or of an uncounted
type is read at all: at a million exposed units the reads take about a second (bench/README.md,
"Experiments"), where reading every exposure event and session into pandas took minutes.
docs/experiments.md, "Exposures" and "Metrics", defines every column.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from django.db import connections
from django.db.models import (
    Case,
    F,
    FloatField,
    IntegerField,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Cast

from analytics.sql import EpochMicroseconds
from events.models import Event, Order
from notifications.models import Experiment, ExperimentExposure, ExperimentUnit

PRE_PERIOD = timedelta(days=14)
PRE_PERIOD_US = PRE_PERIOD // timedelta(microseconds=1)
ADD_TO_CART = "add_to_cart"
ORDER_SUMS = ["orders", "revenue", "pre_orders", "pre_revenue"]


@dataclass(frozen=True, slots=True)
class Exclusions:
    """Exposed units left out of the analysis, by reason (docs: "Exposures")."""

    seen_in_other_variant: int
    outside_targeting: int
    person_in_two_variants: int
    without_person: int

    def as_dict(self) -> dict[str, int]:
        return {
            "seen_in_other_variant": self.seen_in_other_variant,
            "outside_targeting": self.outside_targeting,
            "person_in_two_variants": self.person_in_two_variants,
            "without_person": self.without_person,
        }


@dataclass(frozen=True, slots=True)
class UnitsRead:
    # One row per analysed unit: exposure (the row's id), variant, person_id, bounce (of the
    # first-exposure session; NULL without one), first exposure and window end as epoch
    # microseconds (first_us, end_us) and as UTC datetimes (first_exposed_at, window_end).
    units: pd.DataFrame
    # Exposed units (every exposure row) per variant key, before any exclusion: the SRM input.
    exposed: dict[str, int]
    exclusions: Exclusions


def _frame(queryset: QuerySet, columns: list[str], names: list[str] | None = None) -> pd.DataFrame:
    """A values query's columns as a DataFrame straight from the cursor: the ORM's (and the
    driver's) per-row conversions cost more than the query at a million rows."""
    sql, params = queryset.values_list(*columns).query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(sql, params)
        return pd.DataFrame.from_records(list(cursor.fetchall()), columns=names or columns)


def _exposures(experiment: Experiment, phase: int) -> QuerySet:
    return ExperimentExposure.objects.filter(experiment=experiment, phase=phase)


def _uses_bounce(experiment: Experiment) -> bool:
    return any(metric["kind"] == "bounce" for metric in experiment.metrics)


# Why an exposure row is not a unit of the analysis (the `left_out` column of the read).
KEPT, OTHER_VARIANT, OUTSIDE_TARGETING, WITHOUT_PERSON = range(4)


def units_read(*, experiment: Experiment, phase: int, end: datetime) -> UnitsRead:
    """The phase's analysed units: flagged rows dropped; for a person experiment one unit per
    stitched person (first exposure, its session), a person exposed in two variants dropped;
    for a session experiment one unit per session, its window ending with the session.

    One query over the phase's exposure rows (the flagged ones too: they are few, and counting
    them here saves the database a second pass over a million rows)."""
    is_session = experiment.unit == ExperimentUnit.SESSION
    columns = ["id", "person_id", "variant", "first_us", "left_out"]
    queryset = _exposures(experiment, phase).annotate(
        first_us=EpochMicroseconds("first_exposed_at"),
        left_out=Case(
            When(is_seen_in_other_variant=True, then=Value(OTHER_VARIANT)),
            When(is_outside_targeting=True, then=Value(OUTSIDE_TARGETING)),
            When(person__isnull=True, then=Value(WITHOUT_PERSON)),
            default=Value(KEPT),
            output_field=IntegerField(),
        ),
    )
    if _uses_bounce(experiment):
        # The first-exposure session is a bounce: one interaction at most (exposure events are
        # not interactions, events.sessionize.NON_INTERACTION_TYPES); NULL without a session.
        # A join to a session per row: half the read's time at a million rows, so only when
        # an experiment measures bounce.
        queryset = queryset.annotate(bounce=F("session__is_bounce"))
        columns.append("bounce")
    if is_session:
        queryset = queryset.annotate(ended_us=EpochMicroseconds("session__ended_at"))
        columns.append("ended_us")
    rows = _frame(queryset, columns)
    if "bounce" not in rows:
        rows["bounce"] = None
    exposed = rows["variant"].value_counts().to_dict() if not rows.empty else {}
    reasons = rows["left_out"].value_counts().to_dict() if not rows.empty else {}
    kept = rows[rows["left_out"] == KEPT].astype({"person_id": np.int64, "first_us": np.int64})
    two_variants = 0
    if not is_session:
        kept = kept.sort_values(["first_us", "id"])
        # Only persons with several exposure rows (two devices, or anonymous then logged in) can
        # have seen two variants: the rest need no group-by.
        several = kept[kept["person_id"].duplicated(keep=False)]
        variants = several.groupby("person_id")["variant"].nunique()
        mixed = variants.index[variants > 1]
        two_variants = int(several["person_id"].isin(mixed).sum())
        kept = kept[~kept["person_id"].isin(mixed)].drop_duplicates("person_id", keep="first")
    end_us = int(pd.Timestamp(end).value // 1000)
    units = pd.DataFrame(
        {
            "exposure": kept["id"].to_numpy(),
            "variant": kept["variant"].to_numpy(),
            "person_id": kept["person_id"].to_numpy(),
            "bounce": kept["bounce"].to_numpy(),
            "first_us": kept["first_us"].to_numpy(),
            "end_us": np.full(len(kept), end_us, dtype=np.int64),
        }
    )
    if is_session and not units.empty:
        # Half-open windows: the session's last event still counts. No session (deleted): the
        # phase's end.
        ended = kept["ended_us"].fillna(end_us).to_numpy(np.int64) + 1
        units["end_us"] = np.minimum(ended, end_us)
    units["first_exposed_at"] = pd.DatetimeIndex(
        pd.to_datetime(units["first_us"], unit="us", utc=True)
    )
    units["window_end"] = pd.DatetimeIndex(pd.to_datetime(units["end_us"], unit="us", utc=True))
    return UnitsRead(
        units=units,
        exposed={str(key): int(count) for key, count in exposed.items()},
        exclusions=Exclusions(
            seen_in_other_variant=int(reasons.get(OTHER_VARIANT, 0)),
            outside_targeting=int(reasons.get(OUTSIDE_TARGETING, 0)),
            person_in_two_variants=two_variants,
            without_person=int(reasons.get(WITHOUT_PERSON, 0)),
        ),
    )


def _windowed(
    units: pd.DataFrame, rows: pd.DataFrame, columns: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per unit, the sums of `columns` over the rows of its person at `at_us` in
    [first exposure, window end) and in the pre-period [first exposure − 14 days, first exposure).
    One merge on person (rows × the person's units: one unit each in a person experiment) and
    vectorised comparisons of epoch microseconds."""
    zeros = pd.DataFrame(0.0, index=units.index, columns=columns)
    if rows.empty or units.empty:
        return zeros, zeros.copy()
    spans = units[["person_id", "first_us", "end_us"]].reset_index(names="unit")
    joined = rows.merge(spans, on="person_id")
    at, first = joined["at_us"].to_numpy(), joined["first_us"].to_numpy()
    post = joined[(at >= first) & (at < joined["end_us"].to_numpy())]
    pre = joined[(at < first) & (at >= first - PRE_PERIOD_US)]
    return (
        post.groupby("unit")[columns].sum().reindex(units.index, fill_value=0.0),
        pre.groupby("unit")[columns].sum().reindex(units.index, fill_value=0.0),
    )


def _orders(experiment: Experiment, since: datetime, until: datetime) -> pd.DataFrame:
    """The shop's orders of stitched persons in the time range, net of refunds; a cancelled
    order counts neither as an order nor as revenue. Orders of persons outside the experiment
    are read too and fall out in the merge: filtering them in SQL (a join or a semijoin on a
    million exposure rows) is what made MariaDB's plans slow."""
    net = Cast(F("total") - F("refunded_amount"), FloatField())
    frame = _frame(
        Order.objects.filter(
            shop_id=experiment.shop_id,
            placed_at__gte=since,
            placed_at__lt=until,
            is_cancelled=False,
            person__isnull=False,
        ).annotate(at_us=EpochMicroseconds("placed_at"), net=net),
        ["person_id", "at_us", "net"],
        ["person_id", "at_us", "revenue"],
    )
    frame["orders"] = 1.0
    return frame.astype({"revenue": np.float64, "at_us": np.int64})


def _events(
    experiment: Experiment, types: list[str], since: datetime, until: datetime
) -> pd.DataFrame:
    """The shop's counted events of stitched persons in the time range, one column per type (0/1).
    One query per type: with `type IN (…)` MariaDB 10.11 walks every event of the shop by
    (shop, occurred_at) instead of the (shop, type, occurred_at) ranges, minutes at 3 M events."""
    frames = []
    for name in types:
        frame = _frame(
            Event.objects.filter(
                shop_id=experiment.shop_id,
                type=name,
                occurred_at__gte=since,
                occurred_at__lt=until,
                person__isnull=False,
            ).annotate(at_us=EpochMicroseconds("occurred_at")),
            ["person_id", "at_us"],
        )
        frames.append(frame.assign(**{t: float(t == name) for t in types}))
    return pd.concat(frames, ignore_index=True).astype({"at_us": np.int64})


def metrics_read(
    *, experiment: Experiment, phase: int, read: UnitsRead, custom_events: list[str]
) -> pd.DataFrame:
    """The analysis frame: per unit its variant, first exposure (naive UTC) and, after exposure
    and in the pre-period, `orders`, `revenue`, `add_to_cart`, `event:<name>` (`pre_` columns),
    and `bounce` (its first-exposure session holds at most one interaction)."""
    units = read.units
    types = list(dict.fromkeys([ADD_TO_CART, *custom_events]))
    orders = events = pd.DataFrame()
    if not units.empty:
        since = units["first_exposed_at"].min().to_pydatetime() - PRE_PERIOD
        until = units["window_end"].max().to_pydatetime()
        orders = _orders(experiment, since, until)
        events = _events(experiment, types, since, until)
    post, pre = _windowed(units, orders, ["orders", "revenue"])
    event_post, event_pre = _windowed(units, events, types)
    frame = pd.DataFrame(
        {
            "variant": units["variant"].astype(str).to_numpy(),
            "first_exposed_at": pd.to_datetime(units["first_us"].to_numpy(np.int64), unit="us"),
        }
    )
    for column in ("orders", "revenue"):
        frame[column], frame[f"pre_{column}"] = post[column], pre[column]
    frame["add_to_cart"], frame["pre_add_to_cart"] = event_post[ADD_TO_CART], event_pre[ADD_TO_CART]
    for name in custom_events:
        frame[f"event:{name}"], frame[f"pre_event:{name}"] = event_post[name], event_pre[name]
    frame["bounce"] = units["bounce"].fillna(False).astype(np.float64).to_numpy()
    return frame
