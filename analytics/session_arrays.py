"""A day's sessions as columns, and session funnels computed over all of them at once with numpy.

A 30-day funnel at ten million events covers about 400,000 sessions; reading one row per session
and walking each in Python takes seconds. `DailySessionPaths` keeps, per shop-local day, one blob
with every session's events in funnel order (time, then id) as columns:

- `codes` (uint8): the event's type, an index into the day's `types`;
- `gaps` (uint32 microseconds since the session's previous event, 0 for its first event; int64
  on a day where some gap does not fit, i.e. an inactivity timeout over 71 minutes);
- `lengths` (uint32): events per session, in session order;
- one uint16 column per session attribute (source, device, country): indices into the day's
  vocabularies.

`funnel_counts` evaluates a funnel without a window whose steps are distinct event types without
property filters (the common dashboard funnel) over these columns, with exactly the semantics of
`analytics.funnel_levels.unit_level`: deepest step over all chains (t1 <= … <= tk, ties allowed,
each event used once), strict mode, and the fastest full chain's duration for the median.
"""

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson

ATTRIBUTES = ("utm_source", "device", "country")
GAP_LIMIT = np.iinfo(np.uint32).max
HEADER = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class DayPaths:
    """One day's sessions, decoded."""

    types: list[str]
    vocabularies: dict[str, list[str]]
    lengths: np.ndarray
    attributes: dict[str, np.ndarray]
    codes: np.ndarray
    gaps: np.ndarray


# One session to pack: its (source, device, country) and its (microseconds, event type) in order.
PackSession = tuple[tuple[str, str, str], Sequence[tuple[int, str]]]


def paths_pack(sessions: Sequence[PackSession]) -> bytes:
    types: dict[str, int] = {}
    vocabularies: dict[str, dict[str, int]] = {name: {} for name in ATTRIBUTES}
    lengths = np.empty(len(sessions), dtype=np.uint32)
    attributes = {name: np.empty(len(sessions), dtype=np.uint16) for name in ATTRIBUTES}
    codes: list[int] = []
    gaps: list[int] = []
    for i, (values, events) in enumerate(sessions):
        lengths[i] = len(events)
        for name, value in zip(ATTRIBUTES, values, strict=True):
            attributes[name][i] = vocabularies[name].setdefault(value, len(vocabularies[name]))
        previous = events[0][0] if events else 0
        for at, kind in events:
            codes.append(types.setdefault(kind, len(types)))
            gaps.append(at - previous)
            previous = at
    if len(types) > 256 or any(len(v) > 65536 for v in vocabularies.values()):
        raise ValueError("too many distinct event types or attribute values for one day")
    wide = bool(gaps) and max(gaps) > GAP_LIMIT
    header = orjson.dumps(
        {
            "sessions": len(sessions),
            "events": len(codes),
            "wide": wide,
            "types": list(types),
            "vocabularies": {name: list(values) for name, values in vocabularies.items()},
        }
    )
    parts = [
        HEADER.pack(len(header)),
        header,
        lengths.tobytes(),
        *(attributes[name].tobytes() for name in ATTRIBUTES),
        np.asarray(codes, dtype=np.uint8).tobytes(),
        np.asarray(gaps, dtype=np.int64 if wide else np.uint32).tobytes(),
    ]
    return b"".join(parts)


def paths_unpack(blob: bytes | memoryview) -> DayPaths:
    data = memoryview(blob)
    (size,) = HEADER.unpack_from(data)
    header = orjson.loads(data[HEADER.size : HEADER.size + size])
    offset = HEADER.size + size
    sessions, events = header["sessions"], header["events"]

    def column(dtype, count: int) -> np.ndarray:
        nonlocal offset
        array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        offset += array.nbytes
        return array

    lengths = column(np.uint32, sessions)
    attributes = {name: column(np.uint16, sessions) for name in ATTRIBUTES}
    codes = column(np.uint8, events)
    gaps = column(np.int64 if header["wide"] else np.uint32, events)
    return DayPaths(
        types=header["types"],
        vocabularies=header["vocabularies"],
        lengths=lengths,
        attributes=attributes,
        codes=codes,
        gaps=gaps,
    )


@dataclass(frozen=True, slots=True)
class GroupCounts:
    """Per breakdown value: sessions whose level is exactly k (index k), and the durations in
    microseconds of the completed sessions' fastest chains."""

    reached: list[int]
    durations: list[int]


def funnel_counts(
    days: Sequence[DayPaths],
    steps: Sequence[str],
    *,
    strict: bool,
    filters: dict[str, str],
    breakdown: str = "",
) -> dict[str, GroupCounts]:
    """Funnel levels of every session of `days`, counted per value of `breakdown` ("" = all).

    Steps must be distinct event types (so an event matches at most one step).
    """
    n = len(steps)
    if not n or len(set(steps)) != n:
        raise ValueError("steps must be distinct event types")
    step_of, lengths, groups, gaps, labels = [], [], [], [], [""]
    for day in days:
        lookup = np.full(max(len(day.types), 1), -1, dtype=np.int8)
        for code, kind in enumerate(day.types):
            if kind in steps:
                lookup[code] = steps.index(kind)
        matched = lookup[day.codes] if len(day.codes) else np.empty(0, dtype=np.int8)
        keep = np.ones(len(day.lengths), dtype=bool)
        for name, value in filters.items():
            vocabulary = day.vocabularies[name]
            code = vocabulary.index(value) if value in vocabulary else -1
            keep &= day.attributes[name] == code
        if filters:
            # Sessions filtered out keep their events (the columns stay aligned), matching no step.
            matched = np.where(np.repeat(keep, day.lengths), matched, -1)
        if breakdown:
            values = day.vocabularies[breakdown]
            positions = [_label(labels, value) for value in values] or [0]
            groups.append(np.array(positions, dtype=np.int64)[day.attributes[breakdown]])
        else:
            groups.append(np.zeros(len(day.lengths), dtype=np.int64))
        step_of.append(matched)
        lengths.append(day.lengths.astype(np.int64))
        gaps.append(day.gaps)
    if not days:
        return {}
    matched_all = np.concatenate(step_of)
    length = np.concatenate(lengths)
    group = np.concatenate(groups)
    level, durations, completed = _levels(matched_all, length, np.concatenate(gaps), n, strict)
    result: dict[str, GroupCounts] = {}
    counts = np.bincount(group * (n + 1) + level, minlength=len(labels) * (n + 1))
    for index, label in enumerate(labels):
        reached = counts[index * (n + 1) : (index + 1) * (n + 1)].tolist()
        if not any(reached[1:]):
            continue
        mine = durations[group[completed] == index] if len(completed) else durations
        result[label] = GroupCounts(reached=reached, durations=mine.tolist())
    return result


def _label(labels: list[str], value: str) -> int:
    if value not in labels:
        labels.append(value)
    return labels.index(value)


def _levels(
    matched: np.ndarray, lengths: np.ndarray, gaps: np.ndarray, n: int, strict: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per session: its level; for the completed sessions (ascending), their fastest chain."""
    sessions = len(lengths)
    level = np.zeros(sessions, dtype=np.int64)
    if not len(matched):
        return level, NONE, NONE
    ends = np.cumsum(lengths)
    begins = ends - lengths
    # Every packed session has at least one event, so each begin marks one new session.
    marker = np.zeros(len(matched), dtype=np.int64)
    marker[begins] = 1
    session_of = np.cumsum(marker) - 1
    # Two events of one session are apart by the sum of the gaps between them.
    elapsed = np.cumsum(gaps, dtype=np.int64)
    if strict:
        return _strict_levels(matched, session_of, begins, elapsed, n)
    return _ordered_levels(matched, session_of, ends, begins, gaps, elapsed, n, level)


NONE = np.empty(0, dtype=np.int64)


def _fastest(owner: np.ndarray, took: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smallest `took` per owner (owners ascending), and those owners."""
    if not len(owner):
        return NONE, NONE
    run = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    return np.minimum.reduceat(took, run), owner[run]


def _strict_levels(
    matched: np.ndarray, session_of: np.ndarray, begins: np.ndarray, elapsed: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each next step must be the session's very next event: from every start, the run of
    events matching steps 1, 2, … in a row, for all starts at once."""
    total = len(matched)
    alive = matched == 0
    level_at = alive.astype(np.int64)
    for k in range(1, n):
        follows = np.zeros(total, dtype=bool)
        follows[: total - k] = (matched[k:] == k) & (session_of[k:] == session_of[: total - k])
        alive &= follows
        level_at += alive
    level = np.maximum.reduceat(level_at, begins)
    full = np.flatnonzero(level_at == n)
    took, owners = _fastest(session_of[full], elapsed[full + n - 1] - elapsed[full])
    return level, took, owners


def _ordered_levels(
    matched: np.ndarray,
    session_of: np.ndarray,
    ends: np.ndarray,
    begins: np.ndarray,
    gaps: np.ndarray,
    elapsed: np.ndarray,
    n: int,
    level: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy chains: the earliest next-step event at or after the previous step's time.

    Without a window the chain from a session's first start is the deepest, so levels need one
    chain per session; the fastest full chain can start later, so completed sessions (a few per
    cent) then try every start.
    """
    starts = np.flatnonzero(matched == 0)
    if not len(starts):
        return level, NONE, NONE
    positions = [np.flatnonzero(matched == k) for k in range(1, n)]
    # A tie in time is a zero gap other than a session's first; ties let the next step be any
    # event of the previous step's tie group, so the search starts at the group's first event.
    first_of_tie = None
    if np.count_nonzero(gaps == 0) > len(begins):
        tied = gaps == 0
        tied[begins] = False
        first_of_tie = np.maximum.accumulate(np.where(tied, 0, np.arange(len(matched))))

    def chains(origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        current = origins.copy()
        reached = np.ones(len(origins), dtype=np.int64)
        alive = np.arange(len(origins))
        limit = ends[session_of[origins]]
        for k, candidates in enumerate(positions, start=1):
            if not len(candidates) or not len(alive):
                break
            since = current[alive] if first_of_tie is None else first_of_tie[current[alive]]
            at = np.searchsorted(candidates, since)
            ok = at < len(candidates)
            found = candidates[np.minimum(at, len(candidates) - 1)]
            ok &= found < limit[alive]
            alive = alive[ok]
            current[alive] = found[ok]
            reached[alive] = k + 1
        return reached, current

    owner = session_of[starts]
    first = starts[np.r_[True, owner[1:] != owner[:-1]]]
    reached, _ = chains(first)
    level[session_of[first]] = reached
    completed = np.zeros(len(level), dtype=bool)
    completed[session_of[first[reached == n]]] = True
    again = starts[completed[owner]]
    reached, current = chains(again)
    full = reached == n
    took, owners = _fastest(session_of[again[full]], elapsed[current[full]] - elapsed[again[full]])
    return level, took, owners
