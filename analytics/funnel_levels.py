"""Funnel levels, exactly as SPEC.md defines them (pure: no database).

A unit (a session or a person) reaches step k when it has distinct events e1..ek matching steps
1..k with t1 <= ... <= tk and tk - t1 <= window. Its level is the deepest k over *all* chains.

With a window, the chain from the earliest first-step event is not always the deepest (a later
start can fit more steps inside the window), so every first-step event is tried as a start. For a
fixed start the greedy choice (the earliest usable event for each next step) is optimal: any chain
from that start can be rewritten step by step to use the greedy events, which are no later.
Strict mode also forbids other events of the unit between consecutive steps, so each next step
must be the unit's very next event.
"""

import statistics
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StepSpec:
    """An event type plus optional equality filters on the event's properties."""

    event_type: str
    filters: tuple[tuple[str, Any], ...] = ()

    def matches(self, event_type: str, properties: dict[str, Any]) -> bool:
        if event_type != self.event_type:
            return False
        return all(str(properties.get(key)) == str(value) for key, value in self.filters)


# One event of a unit: (at, order, event_type, properties). `at` is in any unit of time (the
# window uses the same unit), `order` breaks ties in time. A plain tuple, not a class: funnels
# read hundreds of thousands of them and tuples are the cheapest to build and sort.
UnitEvent = tuple[float, int, str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class UnitLevel:
    level: int
    # tk - t1 of the fastest full chain (in the events' time unit), when the unit completed.
    seconds_to_convert: float | None


def unit_level(
    events: Sequence[UnitEvent],
    steps: Sequence[StepSpec],
    *,
    window: float | None,
    strict: bool,
    start_from: float | None = None,
    start_before: float | None = None,
) -> UnitLevel:
    """The deepest step this unit reaches. `events` must be sorted by (at, order).

    Only chains whose first event lies in `[start_from, start_before)` count (the query period).
    """
    n = len(steps)
    if not n or not events:
        return UnitLevel(0, None)
    if any(step.filters for step in steps):
        matches = [[step.matches(e[2], e[3]) for step in steps] for e in events]
    else:
        # Without property filters a match depends on the type alone: one lookup per event.
        by_type: dict[str, list[bool]] = {}
        matches = []
        for e in events:
            row = by_type.get(e[2])
            if row is None:
                row = by_type[e[2]] = [s.event_type == e[2] for s in steps]
            matches.append(row)
    times = [e[0] for e in events]
    best, fastest = 0, None
    for i, at in enumerate(times):
        if not matches[i][0]:
            continue
        if start_from is not None and at < start_from:
            continue
        if start_before is not None and at >= start_before:
            break
        level, last = (
            _strict_chain(matches, times, i, n, window)
            if strict
            else _greedy_chain(matches, times, i, n, window)
        )
        if level > best:
            best = level
        if level == n:
            duration = last - at
            # A later start can complete faster, so the scan goes on after the first success.
            fastest = duration if fastest is None else min(fastest, duration)
    return UnitLevel(best, fastest)


def _greedy_chain(
    matches: list[list[bool]], times: list[float], start: int, n: int, window: float | None
) -> tuple[int, float]:
    t1 = times[start]
    used = {start}
    previous_time = t1
    level = 1
    for k in range(1, n):
        # Any unused event no earlier than the previous step may follow it (ties allowed).
        j = bisect_left(times, previous_time)
        found = -1
        while j < len(times):
            if window is not None and times[j] - t1 > window:
                break
            if j not in used and matches[j][k]:
                found = j
                break
            j += 1
        if found < 0:
            break
        used.add(found)
        previous_time = times[found]
        level = k + 1
    return level, previous_time


def _strict_chain(
    matches: list[list[bool]], times: list[float], start: int, n: int, window: float | None
) -> tuple[int, float]:
    t1 = times[start]
    level = 1
    last = t1
    for k in range(1, n):
        j = start + k
        if j >= len(times) or not matches[j][k]:
            break
        if window is not None and times[j] - t1 > window:
            break
        level = k + 1
        last = times[j]
    return level, last


@dataclass(frozen=True, slots=True)
class FunnelStep:
    step: str
    count: int
    conversion: float  # of the units that entered step 1
    step_conversion: float  # of the units that reached the previous step
    drop_off: int  # units that reached this step but not the next


@dataclass(frozen=True, slots=True)
class FunnelResult:
    steps: list[FunnelStep]
    units: int
    median_seconds_to_convert: float | None


def funnel_levels(
    units: Iterable[tuple[Any, Sequence[UnitEvent]]],
    steps: Sequence[StepSpec],
    *,
    window: float | None,
    strict: bool,
    start_from: float | None = None,
    start_before: float | None = None,
) -> dict[Any, UnitLevel]:
    return {
        key: unit_level(
            events,
            steps,
            window=window,
            strict=strict,
            start_from=start_from,
            start_before=start_before,
        )
        for key, events in units
    }


def funnel_summarize(
    levels: Iterable[UnitLevel], steps: Sequence[StepSpec], *, scale: float = 1
) -> FunnelResult:
    """Counts per step (units whose level is at least k), conversions, drop-off, median time.

    `scale` is how many time units make a second (the median is reported in seconds).
    """
    n = len(steps)
    reached = [0] * (n + 1)
    durations: list[float] = []
    for unit in levels:
        reached[unit.level] += 1
        if unit.level == n and unit.seconds_to_convert is not None:
            durations.append(unit.seconds_to_convert)
    return funnel_from_counts(reached, durations, steps, scale=scale)


def funnel_from_counts(
    reached: Sequence[int], durations: Sequence[float], steps: Sequence[StepSpec], *, scale: float
) -> FunnelResult:
    """The result from `reached[k]` (units whose level is exactly k) and the completed units'
    fastest-chain durations (in the time unit; `scale` of them make a second)."""
    n = len(steps)
    counts = [sum(reached[k:]) for k in range(1, n + 1)]
    first = counts[0] if counts else 0
    result = []
    for k, step in enumerate(steps):
        previous = counts[k - 1] if k else counts[0]
        result.append(
            FunnelStep(
                step=step.event_type,
                count=counts[k],
                conversion=round(counts[k] / first, 6) if first else 0.0,
                step_conversion=round(counts[k] / previous, 6) if previous else 0.0,
                drop_off=counts[k] - (counts[k + 1] if k + 1 < n else 0),
            )
        )
    seconds = [duration / scale for duration in durations]
    return FunnelResult(
        steps=result,
        units=first,
        median_seconds_to_convert=statistics.median(seconds) if seconds else None,
    )
