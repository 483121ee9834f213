"""Sessions: recompute the sessions of the persons a batch touched, or of a whole shop.

The scan itself is pure (events/sessionize.py); this module picks the events to rescan, writes
the sessions and assigns the events to them.
"""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

from clickserver.chunking import chunks
from clickserver.sql import db_value, placeholders, rows_write
from events import follow_ups, sql
from events.models import Person, PipelineJob, PipelineWatermark, Session, Shop
from events.sessionize import MAX_SESSION_LENGTH, EventRow, SessionData, order_key, sessionize


@dataclass(frozen=True, slots=True)
class AssignResult:
    """What assigning events to persons and sessions did (a batch, or a rebuild's sessions)."""

    events: int = 0
    persons_created: int = 0
    persons_merged: int = 0
    sessions_created: int = 0
    sessions_deleted: int = 0


@dataclass(slots=True)
class _Plan:
    """The sessions a recompute writes: kept ids with new data, new ones, and ids to delete."""

    reused: list[tuple[int, int, SessionData]]
    created: list[tuple[int, SessionData]]
    obsolete: list[int]


# The columns sessionisation reads, in EventRow's order after `id` and `occurred_at`.
ROW_FIELDS = (
    "id",
    "occurred_at",
    "type",
    "url",
    "referrer",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "user_agent",
    "country",
    "revenue",
    "session_id",
    "person_id",
)
_SESSION_ATTRIBUTES = [
    f.name for f in Session._meta.concrete_fields if f.name not in ("id", "shop", "person")
]
# One C call per session instead of a generator of getattr calls.
_session_values: Callable[[SessionData], tuple] = attrgetter(*_SESSION_ATTRIBUTES)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _load_person_events(
    *, person_ids: list[int], since: dict[int, datetime] | None
) -> dict[int, list[EventRow]]:
    """Processed events of these persons, from each one's `since` (all when None)."""
    loaded: dict[int, list[EventRow]] = defaultdict(list)
    for chunk in chunks(person_ids, 500):
        where = f"person_id IN ({placeholders(len(chunk))})"
        params: list[Any] = list(chunk)
        if since is not None:
            where += " AND occurred_at >= %s"
            params.append(db_value(min(since[p] for p in chunk)))
        for row in sql.events_fetch(where, params, columns=ROW_FIELDS):
            event = EventRow(*row)
            person_id: int = row[-1]  # the query selected by person, so never NULL here
            if since is None or event.occurred_at >= since[person_id]:
                loaded[person_id].append(event)
    return loaded


def _earlier(at: datetime, delta: timedelta) -> datetime:
    """`at - delta`, or the first instant of the calendar where that would leave it.

    Ingestion rejects times before 2000, but rows stored earlier may hold year 1.
    """
    return at - delta if at - _EARLIEST > delta else _EARLIEST


def _restart_points(*, first_new: dict[int, datetime], timeout: timedelta) -> dict[int, datetime]:
    """For each person, the earliest session start that their new events can change.

    Sessionisation is a left-to-right scan, so sessions before the first new event stand; the
    only older session that can absorb a new event is one that ended within the timeout before
    it. A session start is a safe place to restart the scan, so the result is the start of the
    earliest session ending at or after `first_new - timeout`, or `first_new` itself. Read from
    the sessions (started at most 24 h before they end) instead of a day of raw events.
    """
    restart = dict(first_new)
    for chunk in chunks(sorted(first_new), 500):
        earliest = _earlier(min(first_new[p] for p in chunk), timeout)
        for person_id, started_at, ended_at in sql.sessions_ending_after(
            person_ids=chunk,
            started_at=_earlier(earliest, MAX_SESSION_LENGTH),
            ended_at=earliest,
        ):
            if ended_at >= _earlier(first_new[person_id], timeout):
                restart[person_id] = min(restart[person_id], started_at)
    return restart


def sessions_recompute(
    *,
    shop_id: int,
    timeout: timedelta,
    new_events: dict[int, list[EventRow]],
    full_recompute: set[int],
) -> tuple[int, int]:
    """Recompute the affected sessions of these persons; returns (created, deleted)."""
    incremental = sorted(set(new_events) - full_recompute)
    restart = _restart_points(
        first_new={p: min(e.occurred_at for e in new_events[p]) for p in incremental},
        timeout=timeout,
    )
    old = _load_person_events(person_ids=incremental, since=restart)
    old.update(_load_person_events(person_ids=sorted(full_recompute), since=None))
    plan = _sessions_plan(
        timeout=timeout, new_events=new_events, old=old, full_recompute=full_recompute
    )
    created_ids = _sessions_write(shop_id=shop_id, plan=plan)
    current = {
        e.id: (e.session_id, e.person_id)
        for events in (*old.values(), *new_events.values())
        for e in events
    }
    assigned = list(plan.reused)
    assigned += [
        (pk, person, data) for pk, (person, data) in zip(created_ids, plan.created, strict=True)
    ]
    sql.events_assign(
        [
            (event_id, session_id, person_id)
            for session_id, person_id, data in assigned
            for event_id in data.event_ids
            if current[event_id] != (session_id, person_id)
        ]
    )
    if plan.obsolete:
        replaced = _replacements(obsolete=plan.obsolete, current=current, assigned=assigned)
        for hook in settings.SESSIONS_REPLACED_HOOKS:
            import_string(hook)(replaced=replaced)
        Session.objects.filter(id__in=plan.obsolete).delete()
    return len(created_ids), len(plan.obsolete)


def _replacements(
    *,
    obsolete: list[int],
    current: dict[int, tuple[int | None, int | None]],
    assigned: list[tuple[int, int, SessionData]],
) -> dict[int, int]:
    """Each obsolete session → the session that now holds its first event (by event id).

    A late event can join two visits into one, and a merge of two persons can join two browsers'
    visits: the rows that apps above events keep per session follow their events there.
    """
    gone = set(obsolete)
    first: dict[int, tuple[int, int]] = {}
    for session_id, _person, data in assigned:
        for event_id in data.event_ids:
            old = current[event_id][0]
            if old in gone and (old not in first or event_id < first[old][0]):
                first[old] = (event_id, session_id)
    return {old: session_id for old, (_event, session_id) in first.items()}


def _sessions_plan(
    *,
    timeout: timedelta,
    new_events: dict[int, list[EventRow]],
    old: dict[int, list[EventRow]],
    full_recompute: set[int],
) -> _Plan:
    plan = _Plan(reused=[], created=[], obsolete=[])
    for person_id in sorted(set(new_events) | full_recompute):
        fresh = new_events.get(person_id, [])
        new_ids = {e.id for e in fresh}
        # Every loaded older event is at or after the restart point (all of them on a full
        # recompute), so all of them are sessionised again together with the new ones.
        older = sorted((e for e in old.get(person_id, []) if e.id not in new_ids), key=order_key)
        old_session_ids = list(dict.fromkeys(e.session_id for e in older if e.session_id))
        sessions = sessionize(sorted(older + fresh, key=order_key), timeout=timeout)
        # Reusing the old ids in order keeps an extended session's id (and its events' rows)
        # unchanged, which is the common case of a live visit.
        for index, data in enumerate(sessions):
            if index < len(old_session_ids):
                plan.reused.append((old_session_ids[index], person_id, data))
            else:
                plan.created.append((person_id, data))
        plan.obsolete.extend(old_session_ids[len(sessions) :])
    return plan


def _sessions_write(*, shop_id: int, plan: _Plan) -> list[int]:
    """Upsert the reused sessions, insert the new ones; returns the new ids in plan order."""
    table = Session._meta.db_table
    rows_write(
        table,
        ["id", "shop_id", "person_id", *_SESSION_ATTRIBUTES],
        [(pk, shop_id, person, *_session_values(data)) for pk, person, data in plan.reused],
        on_conflict="update",
    )
    return rows_write(
        table,
        ["shop_id", "person_id", *_SESSION_ATTRIBUTES],
        [(shop_id, person, *_session_values(data)) for person, data in plan.created],
        returning=True,
    )


def sessions_rebuild(*, shop_id: int) -> AssignResult:
    """Recompute every session of a shop from its processed events (after a timeout change)."""
    shop = Shop.objects.only("id", "session_timeout_minutes").get(pk=shop_id)
    person_ids = list(Person.objects.filter(shop_id=shop_id).values_list("id", flat=True))
    created = deleted = 0
    with transaction.atomic():
        PipelineWatermark.objects.select_for_update().filter(
            job=PipelineJob.EVENTS, shop_id=shop_id
        ).first()
        for chunk in chunks(person_ids, 500):
            chunk_created, chunk_deleted = sessions_recompute(
                shop_id=shop_id,
                timeout=timedelta(minutes=shop.session_timeout_minutes),
                new_events={},
                full_recompute=set(chunk),
            )
            created += chunk_created
            deleted += chunk_deleted
    return AssignResult(sessions_created=created, sessions_deleted=deleted)


def shop_sessions_rebuild(*, shop_id: int) -> AssignResult:
    """Re-sessionise a shop (its session timeout changed), then recompute every aggregate built
    from its sessions through the recompute follow-ups (rollups of all days, segments, ...).

    The shop's rebuild request is cleared only if no newer change came in meanwhile.
    """
    requested_at = Shop.objects.values_list("sessions_rebuild_requested_at", flat=True).get(
        pk=shop_id
    )
    result = sessions_rebuild(shop_id=shop_id)
    follow_ups.recompute_run(shop_id=shop_id, days=None)
    if requested_at is not None:
        Shop.objects.filter(pk=shop_id, sessions_rebuild_requested_at=requested_at).update(
            sessions_rebuild_requested_at=None
        )
    return result
