"""Reads for the analysis: who is analysed, and each analysed unit's metric values.

Reads only. A handful of set-based queries (the phase's exposure rows; the orders and the counted
events of the exposed persons within the phase's time range, with the pre-exposure window; the
event counts of the first-exposure sessions), then the windows are applied per unit with pandas
merges and group-bys: no query and no Python loop per unit. docs/experiments.md, "Exposures" and
"Metrics", defines every column.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from django.db import connections
from django.db.models import CharField, Count, QuerySet
from django.db.models.functions import Cast

from events.models import Event, Order, Session
from notifications.experiments.exposures import EXPOSURE_TYPE
from notifications.models import Experiment, ExperimentExposure, ExperimentUnit

PRE_PERIOD = timedelta(days=14)
ADD_TO_CART = "add_to_cart"
BASE_COLUMNS = ("orders", "revenue", "add_to_cart", "bounce")


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
    # One row per analysed unit: variant, person_id, session_id, first_exposed_at, window_end.
    units: pd.DataFrame
    # Exposed units (every exposure row) per variant key, before any exclusion: the SRM input.
    exposed: dict[str, int]
    exclusions: Exclusions


def _frame(
    queryset: QuerySet,
    columns: list[str],
    names: list[str] | None = None,
    *,
    datetimes: tuple[str, ...] = (),
) -> pd.DataFrame:
    """A queryset's columns as a DataFrame straight from the cursor: the ORM's (and the driver's)
    per-row conversions cost more than the query at a million rows. `datetimes` are selected as
    text (the stored UTC value) and parsed by pandas in one vectorised pass (`_utc`)."""
    casts = {f"{name}_text": Cast(name, output_field=CharField()) for name in datetimes}
    selected = [f"{name}_text" if name in datetimes else name for name in columns]
    sql, params = queryset.annotate(**casts).values_list(*selected).query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(sql, params)
        return pd.DataFrame.from_records(list(cursor.fetchall()), columns=names or columns)


def _utc(column: pd.Series) -> pd.Series:
    return pd.to_datetime(column, utc=True, format="ISO8601")


EXPOSURE_COLUMNS = [
    "unit_id",
    "person_id",
    "session_id",
    "variant",
    "first_exposed_at",
    "is_seen_in_other_variant",
    "is_outside_targeting",
]


def units_read(*, experiment: Experiment, phase: int, end: datetime) -> UnitsRead:
    """The phase's analysed units: flagged rows dropped; for a person experiment one unit per
    stitched person (first exposure, its session), a person exposed in two variants dropped;
    for a session experiment one unit per session, its window ending with the session."""
    rows = _frame(
        ExperimentExposure.objects.filter(experiment=experiment, phase=phase),
        EXPOSURE_COLUMNS,
        datetimes=("first_exposed_at",),
    )
    rows["first_exposed_at"] = _utc(rows["first_exposed_at"])
    exposed = rows["variant"].value_counts().to_dict() if not rows.empty else {}
    other = rows["is_seen_in_other_variant"].astype(bool)
    outside = rows["is_outside_targeting"].astype(bool) & ~other
    kept = rows[~other & ~outside]
    without_person = int(kept["person_id"].isna().sum())
    kept = kept[kept["person_id"].notna()].astype({"person_id": np.int64})
    two_variants = 0
    if experiment.unit == ExperimentUnit.PERSON:
        variants = kept.groupby("person_id")["variant"].nunique()
        mixed = variants.index[variants > 1]
        two_variants = int(kept["person_id"].isin(mixed).sum())
        kept = kept[~kept["person_id"].isin(mixed)]
        kept = kept.sort_values("first_exposed_at").drop_duplicates("person_id", keep="first")
    units = kept[["variant", "person_id", "session_id", "first_exposed_at"]].reset_index(drop=True)
    units["window_end"] = pd.Timestamp(end)
    if experiment.unit == ExperimentUnit.SESSION and not units.empty:
        ends = _frame(
            Session.objects.filter(
                id__in=ExperimentExposure.objects.filter(experiment=experiment, phase=phase).values(
                    "session_id"
                )
            ),
            ["id", "ended_at"],
            datetimes=("ended_at",),
        )
        session_end = units["session_id"].map(_utc(ends.set_index("id")["ended_at"]))
        # Half-open windows: the session's last event still counts.
        session_end = session_end + pd.Timedelta(microseconds=1)
        units["window_end"] = session_end.where(
            session_end < units["window_end"], units["window_end"]
        )
    return UnitsRead(
        units=units,
        exposed={str(key): int(count) for key, count in exposed.items()},
        exclusions=Exclusions(
            seen_in_other_variant=int(other.sum()),
            outside_targeting=int(outside.sum()),
            person_in_two_variants=two_variants,
            without_person=without_person,
        ),
    )


def _windowed(
    units: pd.DataFrame, rows: pd.DataFrame, columns: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per unit, the sums of `columns` over rows at `at` in [first exposure, window end) and in
    the pre-period [first exposure − 14 days, first exposure)."""
    empty = pd.DataFrame(0.0, index=units.index, columns=columns)
    if rows.empty or units.empty:
        return empty, empty.copy()
    spans = units[["person_id", "first_exposed_at", "window_end"]].reset_index(names="unit")
    joined = rows.merge(spans, on="person_id")
    after = joined["at"] >= joined["first_exposed_at"]
    post = joined[after & (joined["at"] < joined["window_end"])]
    pre = joined[~after & (joined["at"] >= joined["first_exposed_at"] - PRE_PERIOD)]
    return (
        post.groupby("unit")[columns].sum().reindex(units.index, fill_value=0.0),
        pre.groupby("unit")[columns].sum().reindex(units.index, fill_value=0.0),
    )


def _persons(experiment: Experiment, phase: int):
    return ExperimentExposure.objects.filter(
        experiment=experiment, phase=phase, person__isnull=False
    ).values("person_id")


def _orders(experiment: Experiment, phase: int, since: datetime, until: datetime) -> pd.DataFrame:
    """Orders net of refunds; a cancelled order counts neither as an order nor as revenue."""
    frame = _frame(
        Order.objects.filter(
            shop_id=experiment.shop_id,
            person_id__in=_persons(experiment, phase),
            placed_at__gte=since,
            placed_at__lt=until,
            is_cancelled=False,
        ),
        ["person_id", "placed_at", "total", "refunded_amount"],
        ["person_id", "at", "total", "refunded"],
        datetimes=("placed_at",),
    )
    frame["revenue"] = frame["total"].astype(float) - frame["refunded"].astype(float)
    frame["orders"] = 1.0
    frame["at"] = _utc(frame["at"])
    return frame[["person_id", "at", "orders", "revenue"]]


def _events(
    experiment: Experiment, phase: int, types: list[str], since: datetime, until: datetime
) -> pd.DataFrame:
    frame = _frame(
        Event.objects.filter(
            shop_id=experiment.shop_id,
            type__in=types,
            person_id__in=_persons(experiment, phase),
            occurred_at__gte=since,
            occurred_at__lt=until,
        ),
        ["person_id", "occurred_at", "type"],
        ["person_id", "at", "type"],
        datetimes=("occurred_at",),
    )
    frame["at"] = _utc(frame["at"])
    return frame


def _session_events(
    experiment: Experiment, phase: int, since: datetime, until: datetime
) -> pd.Series:
    """Events other than exposures in each exposure session of the phase: the session's
    `event_count` (kept by the pipeline, joined from the exposure rows) less the shop's exposure
    events in it (one range of the (shop, type, occurred_at) index), not a count of every event
    of every session."""
    totals = _frame(
        ExperimentExposure.objects.filter(
            experiment=experiment, phase=phase, session__isnull=False
        ),
        ["session_id", "session__event_count"],
        ["session_id", "events"],
    )
    exposures = _frame(
        Event.objects.filter(
            shop_id=experiment.shop_id,
            type=EXPOSURE_TYPE,
            occurred_at__gte=since,
            occurred_at__lt=until,
        )
        .exclude(session=None)
        .values("session_id")
        .annotate(n=Count("id")),
        ["session_id", "n"],
    )
    counts = totals.drop_duplicates("session_id").set_index("session_id")["events"].astype(float)
    shown = exposures.set_index("session_id")["n"].astype(float)
    return counts.sub(shown.reindex(counts.index, fill_value=0.0))


def metrics_read(
    *, experiment: Experiment, phase: int, read: UnitsRead, custom_events: list[str]
) -> pd.DataFrame:
    """The analysis frame: per unit its variant, first exposure (naive UTC) and, after exposure
    and in the pre-period, `orders`, `revenue`, `add_to_cart`, `event:<name>` (`pre_` columns),
    and `bounce` (its first-exposure session holds at most one event besides exposures)."""
    units = read.units
    frame = units[["variant"]].copy()
    frame["first_exposed_at"] = (
        pd.to_datetime(units["first_exposed_at"], utc=True).dt.tz_localize(None)
        if not units.empty
        else pd.Series([], dtype="datetime64[ns]")
    )
    units = units.assign(
        first_exposed_at=pd.to_datetime(units["first_exposed_at"], utc=True),
        window_end=pd.to_datetime(units["window_end"], utc=True),
    )
    types = list(dict.fromkeys([ADD_TO_CART, *custom_events]))
    orders = events = pd.DataFrame()
    counts = pd.Series(dtype=float)
    if not units.empty:
        since = units["first_exposed_at"].min().to_pydatetime() - PRE_PERIOD
        until = units["window_end"].max().to_pydatetime()
        orders = _orders(experiment, phase, since, until)
        events = _events(experiment, phase, types, since, until)
        counts = _session_events(experiment, phase, since, until)
    post, pre = _windowed(units, orders, ["orders", "revenue"])
    if not events.empty:
        events = pd.concat(
            [
                events,
                pd.get_dummies(events["type"]).astype(float).reindex(columns=types, fill_value=0.0),
            ],
            axis=1,
        )
    event_post, event_pre = _windowed(units, events, types)
    for column in ("orders", "revenue"):
        frame[column], frame[f"pre_{column}"] = post[column], pre[column]
    frame["add_to_cart"], frame["pre_add_to_cart"] = event_post[ADD_TO_CART], event_pre[ADD_TO_CART]
    for name in custom_events:
        frame[f"event:{name}"], frame[f"pre_event:{name}"] = event_post[name], event_pre[name]
    in_session = units["session_id"].map(counts).fillna(0.0)
    frame["bounce"] = ((in_session <= 1) & units["session_id"].notna()).astype(float)
    return frame
