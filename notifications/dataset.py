"""Session sequences for the conversion model: pure pandas/numpy, no Django, no TensorFlow.

Input is a frame of events with columns `session_key, occurred_at, type, price, category,
person_key` (one row per event; without `person_key` every session is its own person). Every
session becomes one right-padded sequence of at most `MAX_LEN` steps; step features are the event
type's vocabulary index, the hashed category bucket and three numbers (log time gap since the
previous event, log position, log price). Index 0 is padding in both integer inputs, so the model
masks on `event_type == 0`.

Each session also gets a `context` vector: what its person did *before the session started*
(previous sessions, events, add-to-carts, purchases, time since their last event). Only events
strictly before the session's first event count, so it is known when the session starts and
never looks at the session itself or anything after it.
"""

import zlib
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

MAX_LEN = 50
CATEGORY_BUCKETS = 64
NUMERIC_FEATURES = ("log_gap_seconds", "log_position", "log_price")
PURCHASE = "purchase"
# 0 is padding, 1 is any type not listed; the order is part of the model's signature: append only.
EVENT_TYPES = (
    "<pad>",
    "<unknown>",
    "page_view",
    "product_view",
    "add_to_cart",
    "remove_from_cart",
    "add_to_wishlist",
    "search",
    "checkout_started",
    "identify",
    "track",
)
EVENT_TYPE_INDEX = {name: index for index, name in enumerate(EVENT_TYPES)}
FRAME_COLUMNS = ("session_key", "occurred_at", "type", "price", "category", "person_key")
# The person's history before the session starts; the order is part of the model's signature.
CONTEXT_FEATURES = (
    "log_previous_sessions",
    "log_previous_events",
    "log_previous_add_to_carts",
    "log_previous_purchases",
    "log_days_since_last_event",
    "has_history",
)

# Prefixes kept per session by `prefixes_expand` (a 400-view bot adds 20 rows, not 400).
MAX_PREFIXES = 20
SESSION_GAP = timedelta(minutes=30)
SESSION_MAX_LENGTH = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class SequenceBatch:
    """Sessions as padded arrays; row i of every array is the same session."""

    session_keys: np.ndarray  # object [N]
    event_type: np.ndarray  # int32 [N, MAX_LEN], 0 = padding
    category: np.ndarray  # int32 [N, MAX_LEN], 0 = padding or unknown
    numeric: np.ndarray  # float32 [N, MAX_LEN, 3]
    context: np.ndarray  # float32 [N, len(CONTEXT_FEATURES)], the person before the session
    labels: np.ndarray  # int8 [N], 1 = the session purchased
    started_at: np.ndarray  # datetime64[ns] [N], first event of the session (purchase included)
    ended_at: np.ndarray  # datetime64[ns] [N], last event of the session (purchase included)
    # float32 [N]; None = every row counts once. Prefix rows carry session length / prefixes kept.
    weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: np.ndarray) -> "SequenceBatch":
        return SequenceBatch(
            session_keys=self.session_keys[index],
            event_type=self.event_type[index],
            category=self.category[index],
            numeric=self.numeric[index],
            context=self.context[index],
            labels=self.labels[index],
            started_at=self.started_at[index],
            ended_at=self.ended_at[index],
            weights=None if self.weights is None else self.weights[index],
        )

    def sample_weights(self) -> np.ndarray:
        if self.weights is None:
            return np.ones(len(self), dtype=np.float32)
        return self.weights

    def inputs(self) -> dict[str, np.ndarray]:
        """The model's named inputs (the `serving_default` signature)."""
        return {
            "event_type": self.event_type,
            "category": self.category,
            "numeric": self.numeric,
            "context": self.context,
        }


@dataclass(frozen=True, slots=True)
class Split:
    train: SequenceBatch
    validation: SequenceBatch
    test: SequenceBatch
    validation_starts_at: pd.Timestamp
    test_starts_at: pd.Timestamp


def category_bucket(category: object) -> int:
    """A stable bucket in 1..CATEGORY_BUCKETS (Python's hash() is salted per process)."""
    if category is None or (isinstance(category, float) and np.isnan(category)):
        return 0
    text = str(category)
    if not text:
        return 0
    return zlib.crc32(text.encode()) % CATEGORY_BUCKETS + 1


def _frame_normalise(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    if "person_key" not in frame.columns:
        frame["person_key"] = frame["session_key"]
    frame = frame.loc[:, [c for c in FRAME_COLUMNS if c in frame.columns]]
    frame["session_key"] = frame["session_key"].astype(str)
    frame["person_key"] = frame["person_key"].astype(str)
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at"], utc=True)
    return frame


def _running_totals(log: pd.DataFrame) -> pd.DataFrame:
    """After each of the person's events (`log` in time order): how much of everything so far."""
    by_person = log.groupby("person_key", sort=False)
    first_of_session = ~log.duplicated("session_key")

    def running_count(flags: pd.Series) -> pd.Series:
        return flags.astype(np.int64).groupby(log["person_key"], sort=False).cumsum()

    return pd.DataFrame(
        {
            "person_key": log["person_key"],
            "at": log["occurred_at"],
            "sessions": running_count(first_of_session),
            "events": by_person.cumcount() + 1,
            "carts": running_count(log["type"].eq("add_to_cart")),
            "purchases": running_count(log["type"].eq(PURCHASE)),
        }
    )


def context_build(frame: pd.DataFrame, *, history: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per session of `frame`: its person's history strictly before the session's first event.

    `history` is the log the history is read from (default: `frame` itself); live scoring passes
    the persons' earlier events there. Returns a frame indexed by session_key with the columns
    CONTEXT_FEATURES. An event at exactly the session's start time does not count (strictly
    before), so nothing of the session itself, and nothing after it, can leak in.
    """
    frame = _frame_normalise(frame)
    if frame.empty:
        empty = pd.Index([], dtype=object, name="session_key")
        return pd.DataFrame(columns=list(CONTEXT_FEATURES), index=empty, dtype=np.float32)
    log = frame if history is None else _frame_normalise(history)
    log = log.sort_values(["occurred_at", "person_key", "session_key"], kind="stable")
    running = _running_totals(log.reset_index(drop=True))
    starts = (
        frame.groupby("session_key", sort=False)
        .agg(person_key=("person_key", "first"), started_at=("occurred_at", "min"))
        .reset_index()
        .sort_values("started_at", kind="stable")
    )
    merged = pd.merge_asof(
        starts,
        running,
        left_on="started_at",
        right_on="at",
        by="person_key",
        allow_exact_matches=False,
        direction="backward",
    ).set_index("session_key")
    seen = merged["events"].notna()
    days = (merged["started_at"] - merged["at"]).dt.total_seconds().div(86_400).fillna(0.0)
    context = pd.DataFrame(
        {
            "log_previous_sessions": np.log1p(merged["sessions"].fillna(0.0)),
            "log_previous_events": np.log1p(merged["events"].fillna(0.0)),
            "log_previous_add_to_carts": np.log1p(merged["carts"].fillna(0.0)),
            "log_previous_purchases": np.log1p(merged["purchases"].fillna(0.0)),
            "log_days_since_last_event": np.log1p(days.clip(lower=0.0)),
            "has_history": seen.astype(float),
        },
        index=merged.index,
    )
    return context.loc[:, list(CONTEXT_FEATURES)].astype(np.float32)


def sequences_build(
    frame: pd.DataFrame, *, history: pd.DataFrame | None = None, max_len: int = MAX_LEN
) -> SequenceBatch:
    """One padded sequence per session, cut before its first purchase; label = it purchased.

    A session whose first event is a purchase has nothing to predict from and is dropped. A
    session longer than `max_len` keeps its most recent steps (live scoring cares about the latest
    behaviour); the position feature still counts from the session's first event. The context
    (see `context_build`) is read from `history`, by default from `frame` itself.
    """
    frame = _frame_normalise(frame)
    context_all = context_build(frame, history=history)
    frame = frame.sort_values(["session_key", "occurred_at"], kind="stable").reset_index(drop=True)
    groups = frame.groupby("session_key", sort=False)
    is_purchase = frame["type"].eq(PURCHASE)
    label = is_purchase.groupby(frame["session_key"], sort=False).transform("max")
    bounds = groups["occurred_at"].agg(["min", "max"])

    # A purchase and everything after it would give the answer away.
    frame = frame[~is_purchase.groupby(frame["session_key"], sort=False).cummax()].copy()
    frame["label"] = label[frame.index]
    groups = frame.groupby("session_key", sort=False)
    position = groups.cumcount().to_numpy()
    gap = groups["occurred_at"].diff().dt.total_seconds().fillna(0.0).clip(lower=0.0)
    frame = frame.assign(position=position, gap=gap.to_numpy())
    frame = frame[groups.cumcount(ascending=False).to_numpy() < max_len]

    keys, codes = np.unique(frame["session_key"].to_numpy(dtype=str), return_inverse=True)
    slot = frame.groupby("session_key", sort=False).cumcount().to_numpy()
    count = len(keys)
    event_type = np.zeros((count, max_len), dtype=np.int32)
    category = np.zeros((count, max_len), dtype=np.int32)
    numeric = np.zeros((count, max_len, len(NUMERIC_FEATURES)), dtype=np.float32)
    event_type[codes, slot] = [EVENT_TYPE_INDEX.get(t, 1) for t in frame["type"]]
    category[codes, slot] = [category_bucket(c) for c in frame["category"]]
    price = pd.to_numeric(frame["price"], errors="coerce").fillna(0.0).clip(lower=0.0)
    numeric[codes, slot, 0] = np.log1p(frame["gap"].to_numpy())
    numeric[codes, slot, 1] = np.log1p(frame["position"].to_numpy())
    numeric[codes, slot, 2] = np.log1p(price.to_numpy(dtype=float))
    labels = np.zeros(count, dtype=np.int8)
    labels[codes] = frame["label"].to_numpy(dtype=np.int8)
    session_bounds = bounds.loc[keys]
    context = context_all.reindex(keys).to_numpy(dtype=np.float32)
    return SequenceBatch(
        session_keys=keys.astype(object),
        event_type=event_type,
        category=category,
        numeric=numeric,
        context=np.ascontiguousarray(context.reshape(count, len(CONTEXT_FEATURES))),
        labels=labels,
        started_at=session_bounds["min"].dt.tz_convert(None).to_numpy(),
        ended_at=session_bounds["max"].dt.tz_convert(None).to_numpy(),
    )


def sequences_prefix(batch: SequenceBatch, *, events: int) -> SequenceBatch:
    """The same sessions as if only their first `events` steps had been seen."""
    keep = np.arange(batch.event_type.shape[1]) < events
    return SequenceBatch(
        session_keys=batch.session_keys,
        event_type=np.where(keep, batch.event_type, 0).astype(np.int32),
        category=np.where(keep, batch.category, 0).astype(np.int32),
        numeric=np.where(keep[None, :, None], batch.numeric, 0.0).astype(np.float32),
        # Known when the session starts, so every prefix has all of it.
        context=batch.context,
        labels=batch.labels,
        started_at=batch.started_at,
        ended_at=batch.ended_at,
        weights=batch.weights,
    )


def prefixes_expand(batch: SequenceBatch, *, max_per_session: int = MAX_PREFIXES) -> SequenceBatch:
    """Every session as each of its prefixes: one row per "events seen so far", same label.

    Live scoring scores sessions that are still going, after each new event, and asks whether
    the session will end in a purchase. A model fitted only on finished sessions answers another
    question (a one-view session that *ended* there almost never buys, one that has only *begun*
    sometimes does), so training, calibration and the calibration report use prefixes. A session
    with more than `max_per_session` steps keeps that many evenly spaced prefix lengths (its last
    step included), each weighted `steps / kept` so every step of every session counts once.
    """
    lengths = (batch.event_type > 0).sum(axis=1)
    rows: list[np.ndarray] = []
    cuts: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for index, length in enumerate(lengths):
        if length == 0:
            continue
        if length <= max_per_session:
            kept = np.arange(1, length + 1)
        else:
            kept = np.unique(np.linspace(1, length, max_per_session).round().astype(np.int64))
        rows.append(np.full(len(kept), index))
        cuts.append(kept)
        weights.append(np.full(len(kept), length / len(kept), dtype=np.float32))
    if not rows:
        return batch.take(np.zeros(0, dtype=np.int64))
    row = np.concatenate(rows)
    cut = np.concatenate(cuts)
    base = batch.sample_weights()[row]
    keep = np.arange(batch.event_type.shape[1])[None, :] < cut[:, None]
    return SequenceBatch(
        session_keys=batch.session_keys[row],
        event_type=np.where(keep, batch.event_type[row], 0).astype(np.int32),
        category=np.where(keep, batch.category[row], 0).astype(np.int32),
        numeric=np.where(keep[:, :, None], batch.numeric[row], 0.0).astype(np.float32),
        context=batch.context[row],
        labels=batch.labels[row],
        started_at=batch.started_at[row],
        ended_at=batch.ended_at[row],
        weights=(np.concatenate(weights) * base).astype(np.float32),
    )


def split_by_time(
    batch: SequenceBatch, *, train_fraction: float = 0.70, validation_fraction: float = 0.15
) -> Split:
    """Train on the oldest sessions, validate on the next, test on the newest.

    The cut-offs are quantiles of the session start time. A session that starts before a cut-off
    but is still going after it is dropped from the earlier part: its label is only known after
    the cut-off, so keeping it would let the future leak into training.
    """
    if len(batch) == 0:
        raise ValueError("no sessions to split")
    starts = pd.Series(batch.started_at)
    validation_starts_at = starts.quantile(train_fraction, interpolation="lower")
    test_starts_at = starts.quantile(train_fraction + validation_fraction, interpolation="lower")
    started, ended = batch.started_at, batch.ended_at
    train = (started < validation_starts_at) & (ended < validation_starts_at)
    validation = (started >= validation_starts_at) & (started < test_starts_at)
    validation &= ended < test_starts_at
    test = started >= test_starts_at
    return Split(
        train=batch.take(np.flatnonzero(train)),
        validation=batch.take(np.flatnonzero(validation)),
        test=batch.take(np.flatnonzero(test)),
        validation_starts_at=pd.Timestamp(validation_starts_at),
        test_starts_at=pd.Timestamp(test_starts_at),
    )


TAOBAO_TYPES = {"pv": "product_view", "cart": "add_to_cart", "fav": "add_to_wishlist"}
TAOBAO_TYPES["buy"] = PURCHASE


def taobao_read(path: str, *, max_users: int | None = None) -> pd.DataFrame:
    """The raw UserBehavior CSV (user_id,item_id,category_id,behavior_type,timestamp)."""
    raw = pd.read_csv(
        path,
        names=["user_id", "item_id", "category_id", "behavior_type", "timestamp"],
        header=0,
        dtype={"user_id": str, "item_id": str, "category_id": str, "behavior_type": str},
    )
    if max_users is not None:
        raw = raw[raw["user_id"].isin(raw["user_id"].drop_duplicates().head(max_users))]
    return raw


def taobao_sessionize(
    raw: pd.DataFrame, *, gap: timedelta = SESSION_GAP, max_length: timedelta = SESSION_MAX_LENGTH
) -> pd.DataFrame:
    """Raw Taobao rows → the event frame, sessionised with SPEC's rule.

    Per user, ordered by time, a new session starts when the gap since the previous event is more
    than `gap` or the session has lasted `max_length`. The 24 h rule depends on where the current
    session started, so it is a per-user scan rather than a vectorised diff.
    """
    frame = raw[raw["behavior_type"].isin(TAOBAO_TYPES)].copy()
    frame["occurred_at"] = pd.to_datetime(frame["timestamp"].astype("int64"), unit="s", utc=True)
    frame = frame.sort_values(["user_id", "occurred_at"], kind="stable").reset_index(drop=True)
    seconds = frame["timestamp"].to_numpy(dtype=np.int64)
    users = frame["user_id"].to_numpy()
    gap_s, length_s = gap.total_seconds(), max_length.total_seconds()
    numbers = np.zeros(len(frame), dtype=np.int64)
    number, start = 0, 0
    for i in range(len(frame)):
        if i == 0 or users[i] != users[i - 1]:
            number, start = 0, seconds[i]
        elif seconds[i] - seconds[i - 1] > gap_s or seconds[i] - start >= length_s:
            number, start = number + 1, seconds[i]
        numbers[i] = number
    return pd.DataFrame(
        {
            "session_key": frame["user_id"] + ":" + pd.Series(numbers).astype(str),
            "occurred_at": frame["occurred_at"],
            "type": frame["behavior_type"].map(TAOBAO_TYPES),
            "price": np.nan,
            "category": frame["category_id"],
            "person_key": frame["user_id"],
        }
    )
