"""Identity: stitch a batch's events to persons, creating, merging and refreshing persons.

Pure graph logic lives in events/identity.py; this module reads the stored identifiers, writes
persons and identifiers, and re-attributes a merged person's rows.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from clickserver.chunking import chunks
from clickserver.sql import CHUNK, rows_write
from events import identity, sql
from events.models import Checkout, Event, Order, Person, PersonIdentifier, Session

# An event as identity reads it: (id, type, anonymous_id, user_id, properties, occurred_at).
IdentityRow = tuple[int, str, str, str, Any, datetime]
# A component's root in the identity graph (an identifier key or a stored person).
Root = Any


@dataclass(slots=True)
class Resolution:
    event_person: dict[int, int]
    full_recompute: set[int]
    persons_created: int
    persons_merged: int


@dataclass(slots=True)
class _Seen:
    """What a batch says about each graph root: when it was seen, its traits, its events."""

    times: dict[Root, list[datetime]]
    traits: dict[Root, dict[str, Any]]
    root_by_event: dict[int, Root]


def persons_resolve(*, shop_id: int, events: list[IdentityRow], now: datetime) -> Resolution:
    """Stitch events `(id, type, anonymous_id, user_id, properties, occurred_at)` to persons.

    Creates persons and identifiers, merges persons that an event proves to be one shopper
    (re-attributing the loser's events, sessions, orders, checkouts and identifiers), and
    returns each event's person. Events are linked in id order, the order they arrived in.
    """
    keys_by_event = _event_keys(events)
    known, person_exclusive = _identifiers_stored(shop_id=shop_id, keys_by_event=keys_by_event)
    graph = identity.IdentityGraph(known=known, person_exclusive=person_exclusive)
    primary_by_event = {event_id: graph.link(keys) for event_id, keys in keys_by_event.items()}
    components = graph.components()
    seen = _roots_seen(events=events, graph=graph, primary_by_event=primary_by_event)
    person_by_root, created = _persons_create(
        shop_id=shop_id, components=components, seen=seen, now=now
    )
    merged, full_recompute = _persons_merge_components(components=components, seen=seen)
    _identifiers_store(
        shop_id=shop_id,
        components=components,
        person_by_root=person_by_root,
        known=known,
        now=now,
    )
    return Resolution(
        event_person={
            event_id: person_by_root[root] for event_id, root in seen.root_by_event.items()
        },
        full_recompute=full_recompute,
        persons_created=created,
        persons_merged=merged,
    )


def _event_keys(events: list[IdentityRow]) -> dict[int, list[identity.Key]]:
    """Each event's identifier keys.

    Without properties an event's identifiers depend on (anonymous_id, user_id) alone (its type
    only matters for what an identify or alias carries in them), and a batch holds many events
    of each visitor: extract them once per visitor.
    """
    keys_by_event: dict[int, list[identity.Key]] = {}
    plain: dict[tuple[str, str], list[identity.Key]] = {}
    for event_id, type_, anonymous_id, user_id, properties, _ in events:
        if properties:
            keys = identity.event_identifiers(
                type=type_, anonymous_id=anonymous_id, user_id=user_id, properties=properties
            )
        elif (keys := plain.get((anonymous_id, user_id))) is None:  # type: ignore[assignment]
            keys = plain[anonymous_id, user_id] = identity.event_identifiers(
                type=type_, anonymous_id=anonymous_id, user_id=user_id, properties=None
            )
        keys_by_event[event_id] = keys
    return keys_by_event


def _identifiers_stored(
    *, shop_id: int, keys_by_event: dict[int, list[identity.Key]]
) -> tuple[dict[identity.Key, int], dict[int, dict[str, str]]]:
    """The stored person of each known key, and those persons' exclusive identifiers."""
    values_by_kind: dict[str, set[str]] = defaultdict(set)
    for keys in keys_by_event.values():
        for kind, value in keys:
            values_by_kind[kind].add(value)
    known: dict[identity.Key, int] = {}
    for kind, values in values_by_kind.items():
        for value, person_id in sql.identifiers_persons(
            shop_id=shop_id, kind=str(kind), values=sorted(values)
        ):
            known[(kind, value)] = person_id
    person_exclusive: dict[int, dict[str, str]] = defaultdict(dict)
    for person_id, kind, value in sql.identifiers_of_persons(
        person_ids=sorted(set(known.values())),
        kinds=[str(kind) for kind in sorted(identity.EXCLUSIVE_KINDS)],
    ):
        person_exclusive[person_id][kind] = value
    return known, person_exclusive


def _roots_seen(
    *,
    events: list[IdentityRow],
    graph: identity.IdentityGraph,
    primary_by_event: dict[int, identity.Key | None],
) -> _Seen:
    seen = _Seen(times=defaultdict(list), traits=defaultdict(dict), root_by_event={})
    for event_id, type_, _, _, properties, occurred_at in events:
        primary = primary_by_event[event_id]
        if primary is None:
            continue
        root = graph.find(primary)
        seen.root_by_event[event_id] = root
        seen.times[root].append(occurred_at)
        if type_ == "identify" and isinstance(properties, dict):
            seen.traits[root].update(_public_traits(properties.get("traits")))
    return seen


def _persons_create(
    *, shop_id: int, components: dict[Root, identity.Component], seen: _Seen, now: datetime
) -> tuple[dict[Root, int], int]:
    """The person of every root the batch saw, creating those with no stored person yet;
    returns it with the number created."""
    person_by_root: dict[Root, int] = {}
    new_roots = []
    new_rows = []
    for root, times in seen.times.items():
        component = components[root]
        if component.survivor is not None:
            person_by_root[root] = component.survivor
            continue
        new_roots.append(root)
        new_rows.append(
            (shop_id, component.user_id, min(times), max(times), seen.traits.get(root, {}), now)
        )
    new_ids = rows_write(
        Person._meta.db_table,
        ["shop_id", "user_id", "first_seen_at", "last_seen_at", "traits", "created_at"],
        new_rows,
        returning=True,
    )
    person_by_root.update(zip(new_roots, new_ids, strict=True))
    return person_by_root, len(new_ids)


def _persons_merge_components(
    *, components: dict[Root, identity.Component], seen: _Seen
) -> tuple[int, set[int]]:
    """Merge the stored persons each component joins, then refresh the survivors; returns the
    number of persons merged away and the survivors whose sessions need a full recompute."""
    merged = 0
    full_recompute: set[int] = set()
    survivors: dict[int, Root] = {}
    for root in seen.times:
        if (survivor_id := components[root].survivor) is not None:
            survivors[survivor_id] = root
    for root, component in components.items():
        if len(component.persons) > 1:
            survivor, losers = component.persons[0], component.persons[1:]
            _persons_merge(survivor_id=survivor, loser_ids=losers)
            merged += len(losers)
            full_recompute.add(survivor)
            survivors.setdefault(survivor, root)
    _persons_refresh(
        survivors=survivors, components=components, times=seen.times, traits=seen.traits
    )
    return merged, full_recompute


def _identifiers_store(
    *,
    shop_id: int,
    components: dict[Root, identity.Component],
    person_by_root: dict[Root, int],
    known: dict[identity.Key, int],
    now: datetime,
) -> None:
    new_identifiers = [
        (shop_id, person_by_root[root], kind, value, now)
        for root, component in components.items()
        if root in person_by_root
        for kind, value in component.identifiers
        if (kind, value) not in known
    ]
    # Ignoring conflicts keeps a concurrent writer outside the pipeline (a Shopify webhook that
    # stores a customer id) from failing the batch; the stored edge wins and later events use it.
    rows_write(
        PersonIdentifier._meta.db_table,
        ["shop_id", "person_id", "kind", "value", "created_at"],
        new_identifiers,
        on_conflict="ignore",
    )


def _public_traits(traits: Any) -> dict[str, Any]:
    """Identify traits worth keeping on the person; the raw email stays out (only its hash)."""
    if not isinstance(traits, dict):
        return {}
    return {key: value for key, value in traits.items() if key != "email"}


def _persons_merge(*, survivor_id: int, loser_ids: list[int]) -> None:
    """Re-attribute everything of the losers to the survivor, then delete the losers."""
    Event.objects.filter(person_id__in=loser_ids).update(person_id=survivor_id)
    Session.objects.filter(person_id__in=loser_ids).update(person_id=survivor_id)
    Order.objects.filter(person_id__in=loser_ids).update(person_id=survivor_id)
    Checkout.objects.filter(person_id__in=loser_ids).update(person_id=survivor_id)
    PersonIdentifier.objects.filter(person_id__in=loser_ids).update(person_id=survivor_id)
    for hook in settings.PERSON_MERGE_HOOKS:
        import_string(hook)(survivor_id=survivor_id, loser_ids=loser_ids)
    losers = list(Person.objects.filter(id__in=loser_ids))
    survivor = Person.objects.get(pk=survivor_id)
    survivor.first_seen_at = min([survivor.first_seen_at, *(p.first_seen_at for p in losers)])
    survivor.last_seen_at = max([survivor.last_seen_at, *(p.last_seen_at for p in losers)])
    survivor.traits = {**{k: v for p in losers for k, v in p.traits.items()}, **survivor.traits}
    survivor.save(update_fields=["first_seen_at", "last_seen_at", "traits"])
    Person.objects.filter(id__in=loser_ids).delete()


def _persons_refresh(
    *,
    survivors: dict[int, Any],
    components: dict[Any, identity.Component],
    times: dict[Any, list[datetime]],
    traits: dict[Any, dict[str, Any]],
) -> None:
    """Bring existing persons' user id, first/last seen and traits up to this batch."""
    columns = ["id", "shop_id", "user_id", "first_seen_at", "last_seen_at", "traits", "created_at"]
    changed = []
    for chunk in chunks(sorted(survivors), CHUNK):
        for row in Person.objects.filter(id__in=chunk).values_list(*columns):
            person_id, shop_id, user_id, first_seen_at, last_seen_at, person_traits, created = row
            root = survivors[person_id]
            seen = times.get(root)
            if seen:
                first_seen_at = min(first_seen_at, *seen)
                last_seen_at = max(last_seen_at, *seen)
            new_row = (
                person_id,
                shop_id,
                components[root].user_id or user_id,
                first_seen_at,
                last_seen_at,
                {**person_traits, **traits.get(root, {})},
                created,
            )
            if new_row != row:
                changed.append(new_row)
    rows_write(Person._meta.db_table, columns, changed, on_conflict="update")
