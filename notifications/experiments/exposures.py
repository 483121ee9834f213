"""Exposures: `experiment_exposure` events folded into one `ExperimentExposure` row per unit.

An exposure event is ingested like any other event (idempotent by `event_id`), with properties
`{"experiment": key, "variant": key, "phase": n}`. `exposures_extract` reads the shop's processed
events (below the pipeline's `events` watermark, so each has its person and session) after its own
`experiments` watermark, in id order, and folds them into the rows: the earliest exposure gives the
variant, the first time and the first event; every exposure adds to the count; a second variant
sets `is_seen_in_other_variant`; an exposure the targeting or the holdout would have refused sets
`is_outside_targeting`. The rows and the watermark move in one transaction, so each event is
counted once however often the task runs. docs/experiments.md, "Exposures", has the rules.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction

from events.models import Event, Person, PipelineJob, PipelineWatermark, Session
from notifications.experiments.assignment import is_held_out, unit_id_build
from notifications.experiments.rules import UnitTraits, needs_person_lookup, targeting_admits
from notifications.models import (
    ConversionScore,
    Experiment,
    ExperimentExposure,
    ExperimentPhase,
    ExperimentUnit,
)
from segments.models import SegmentMembership

# Sessions treat it as a non-interaction event (events.sessionize.NON_INTERACTION_TYPES).
EXPOSURE_TYPE = "experiment_exposure"
BATCH_SIZE = 20000
CHUNK = 1000


@dataclass(frozen=True, slots=True)
class ExposureRow:
    event_id: int
    occurred_at: datetime
    anonymous_id: str
    user_id: str
    person_id: int | None
    session_id: int | None
    properties: Any


@dataclass(slots=True)
class _Fold:
    """One unit's exposures in this batch."""

    first: ExposureRow
    variant: str
    variants: set[str] = field(default_factory=set)
    count: int = 0
    is_outside: bool = False


@dataclass(frozen=True, slots=True)
class ExtractResult:
    events: int
    units: int
    # Exposure events that name no phase of a started experiment of the shop, or a variant the
    # phase does not have, or fall outside the phase's time: skipped, counted here.
    ignored: int
    repaired: int
    # Experiments whose exposure rows this extraction added to or changed: their stored results
    # are out of date whatever their age (results.experiments_refresh).
    experiment_ids: frozenset[int] = frozenset()


def _watermark_locked(shop_id: int) -> PipelineWatermark:
    PipelineWatermark.objects.get_or_create(job=PipelineJob.EXPERIMENTS, shop_id=shop_id)
    return PipelineWatermark.objects.select_for_update().get(
        job=PipelineJob.EXPERIMENTS, shop_id=shop_id
    )


def _processed_position(shop_id: int) -> int:
    """Events up to here have their person and session; without a pipeline watermark none do."""
    position = (
        PipelineWatermark.objects.filter(job=PipelineJob.EVENTS, shop_id=shop_id)
        .values_list("position", flat=True)
        .first()
    )
    return position or 0


def _phase_for(
    phases: Mapping[str, list[tuple[Experiment, ExperimentPhase]]],
    properties: Any,
    occurred_at: datetime,
) -> tuple[Experiment, ExperimentPhase, str] | None:
    """The experiment phase an exposure belongs to, and its variant; None when it names none."""
    if not isinstance(properties, dict):
        return None
    key, variant, number = (properties.get(name) for name in ("experiment", "variant", "phase"))
    if not isinstance(key, str) or not isinstance(variant, str) or isinstance(number, bool):
        return None
    for experiment, phase in phases.get(key, ()):
        if phase.number != number or occurred_at < phase.started_at:
            continue
        if phase.ended_at is not None and occurred_at >= phase.ended_at:
            continue
        if variant in {v["key"] for v in phase.variants}:
            return experiment, phase, variant
    return None


def _phases_of(shop_id: int, keys: set[str]) -> dict[str, list[tuple[Experiment, ExperimentPhase]]]:
    phases: dict[str, list[tuple[Experiment, ExperimentPhase]]] = {}
    for phase in ExperimentPhase.objects.filter(
        experiment__shop_id=shop_id, experiment__key__in=keys
    ).select_related("experiment"):
        phases.setdefault(phase.experiment.key, []).append((phase.experiment, phase))
    return phases


def _unit_id(experiment: Experiment, row: ExposureRow) -> str | None:
    if experiment.unit == ExperimentUnit.SESSION:
        return f"session:{row.session_id}" if row.session_id is not None else None
    return unit_id_build(unit="person", anonymous_id=row.anonymous_id, user_id=row.user_id)


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the targeting reads about the batch's sessions and persons."""

    sessions: dict[int, tuple[str, str, datetime]]
    first_seen: dict[int, datetime]
    segments: dict[int, set[int]]
    scores: dict[int, float]


def _facts_load(rows: list[ExposureRow], experiments: Iterable[Experiment]) -> _Facts:
    session_ids = {row.session_id for row in rows if row.session_id is not None}
    person_ids = {row.person_id for row in rows if row.person_id is not None}
    sessions = {
        sid: (device, source, started)
        for sid, device, source, started in Session.objects.filter(id__in=session_ids).values_list(
            "id", "device", "utm_source", "started_at"
        )
    }
    first_seen = dict(Person.objects.filter(id__in=person_ids).values_list("id", "first_seen_at"))
    targeted = [e.targeting for e in experiments if needs_person_lookup(e.targeting)]
    segment_ids = {t["segment"] for t in targeted if "segment" in t}
    segments: dict[int, set[int]] = {}
    if segment_ids:
        for person_id, segment_id in SegmentMembership.objects.filter(
            person_id__in=person_ids, segment_id__in=segment_ids
        ).values_list("person_id", "segment_id"):
            segments.setdefault(person_id, set()).add(segment_id)
    scores: dict[int, float] = {}
    if any("score_min" in t or "score_max" in t for t in targeted):
        # Oldest first, so the latest score of each person is the one left in the dict.
        for person_id, score in (
            ConversionScore.objects.filter(person_id__in=person_ids)
            .order_by("scored_at")
            .values_list("person_id", "score")
        ):
            scores[person_id] = score
    return _Facts(sessions=sessions, first_seen=first_seen, segments=segments, scores=scores)


def _traits(row: ExposureRow, facts: _Facts) -> UnitTraits:
    """The unit as the targeting saw it at exposure: the session's device and utm_source, new
    when the person's first event is in this session, their segments and latest score now."""
    device, source, started = facts.sessions.get(row.session_id or 0, (None, None, None))
    first_seen = facts.first_seen.get(row.person_id or 0)
    visitor = None
    if started is not None and first_seen is not None:
        visitor = "new" if first_seen >= started else "returning"
    return UnitTraits(
        device=device or None,
        source=source or None,
        visitor=visitor,
        segment_ids=frozenset(facts.segments.get(row.person_id or 0, ())),
        score=facts.scores.get(row.person_id or 0),
    )


def _rows_read(shop_id: int, after: int, upto: int) -> list[ExposureRow]:
    return [
        ExposureRow(*values)
        for values in Event.objects.filter(
            shop_id=shop_id, type=EXPOSURE_TYPE, id__gt=after, id__lte=upto
        )
        .order_by("id")
        .values_list(
            "id", "occurred_at", "anonymous_id", "user_id", "person_id", "session_id", "properties"
        )[:BATCH_SIZE]
    ]


def _fold(rows: list[ExposureRow], shop_id: int) -> tuple[dict[tuple[int, int, str], _Fold], int]:
    """Group the batch by (experiment, phase, unit); returns the folds and the ignored count."""
    keys = {r.properties.get("experiment") for r in rows if isinstance(r.properties, dict)}
    phases = _phases_of(shop_id, {k for k in keys if isinstance(k, str)})
    facts = _facts_load(rows, (e for pairs in phases.values() for e, _ in pairs))
    folds: dict[tuple[int, int, str], _Fold] = {}
    ignored = 0
    for row in rows:
        found = _phase_for(phases, row.properties, row.occurred_at)
        unit_id = _unit_id(found[0], row) if found else None
        if found is None or unit_id is None:
            ignored += 1
            continue
        experiment, phase, variant = found
        fold = folds.setdefault(
            (experiment.pk, phase.number, unit_id), _Fold(first=row, variant=variant)
        )
        if (row.occurred_at, row.event_id) < (fold.first.occurred_at, fold.first.event_id):
            fold.first, fold.variant = row, variant
        fold.variants.add(variant)
        fold.count += 1
        # The holdout hash of a session unit uses the storefront's session key, which the event
        # log does not keep, so only person units are checked against the holdout.
        held_out = experiment.unit == ExperimentUnit.PERSON and is_held_out(
            unit_id=unit_id, holdout_share=phase.holdout_share
        )
        fold.is_outside = (
            fold.is_outside
            or held_out
            or (not targeting_admits(experiment.targeting, _traits(row, facts)))
        )
    return folds, ignored


def _folds_store(folds: dict[tuple[int, int, str], _Fold]) -> None:
    """Merge the batch's folds into the stored rows: earliest exposure wins, counts add up."""
    existing: dict[tuple[int, int, str], ExperimentExposure] = {}
    by_phase: dict[tuple[int, int], list[str]] = {}
    for experiment_id, phase, unit_id in folds:
        by_phase.setdefault((experiment_id, phase), []).append(unit_id)
    for (experiment_id, phase), unit_ids in by_phase.items():
        for start in range(0, len(unit_ids), CHUNK):
            for row in ExperimentExposure.objects.filter(
                experiment_id=experiment_id,
                phase=phase,
                unit_id__in=unit_ids[start : start + CHUNK],
            ):
                existing[(experiment_id, phase, row.unit_id)] = row
    created: list[ExperimentExposure] = []
    changed: list[ExperimentExposure] = []
    for (experiment_id, phase, unit_id), fold in folds.items():
        first = fold.first
        stored = existing.get((experiment_id, phase, unit_id))
        if stored is None:
            row = ExperimentExposure(
                experiment_id=experiment_id,
                phase=phase,
                unit_id=unit_id,
                variant=fold.variant,
                first_exposed_at=first.occurred_at,
                first_event_id=first.event_id,
                person_id=first.person_id,
                session_id=first.session_id,
            )
            created.append(row)
        else:
            row = stored
            changed.append(row)
            if (first.occurred_at, first.event_id) < (row.first_exposed_at, row.first_event_id):
                row.first_exposed_at, row.first_event_id = first.occurred_at, first.event_id
                row.person_id, row.session_id = first.person_id, first.session_id
                row.variant = fold.variant
        row.is_seen_in_other_variant = row.is_seen_in_other_variant or bool(
            fold.variants - {row.variant}
        )
        row.is_outside_targeting = row.is_outside_targeting or fold.is_outside
        row.exposure_count += fold.count
    ExperimentExposure.objects.bulk_create(created, batch_size=CHUNK)
    ExperimentExposure.objects.bulk_update(
        changed,
        [
            "variant",
            "first_exposed_at",
            "first_event_id",
            "person_id",
            "session_id",
            "exposure_count",
            "is_seen_in_other_variant",
            "is_outside_targeting",
        ],
        batch_size=CHUNK,
    )


def exposures_repair(*, shop_id: int) -> int:
    """Re-read the person and session of rows that lost them (a merge deleted the person, a
    session rebuild the session) from their first event; delete rows whose event is gone (an
    erasure). Returns the rows touched."""
    orphans = list(
        ExperimentExposure.objects.filter(experiment__shop_id=shop_id)
        .filter(person__isnull=True)
        .only("id", "first_event_id", "person_id", "session_id")
    ) + list(
        ExperimentExposure.objects.filter(experiment__shop_id=shop_id)
        .filter(person__isnull=False, session__isnull=True)
        .only("id", "first_event_id", "person_id", "session_id")
    )
    if not orphans:
        return 0
    events = {
        pk: (person_id, session_id)
        for pk, person_id, session_id in Event.objects.filter(
            shop_id=shop_id, id__in=[row.first_event_id for row in orphans]
        ).values_list("id", "person_id", "session_id")
    }
    gone = [row.pk for row in orphans if events.get(row.first_event_id, (None,))[0] is None]
    kept = [row for row in orphans if row.pk not in set(gone)]
    for row in kept:
        row.person_id, row.session_id = events[row.first_event_id]
    ExperimentExposure.objects.filter(pk__in=gone).delete()
    ExperimentExposure.objects.bulk_update(kept, ["person_id", "session_id"], batch_size=CHUNK)
    return len(orphans)


def exposures_repair_run(*, shop_id: int) -> int:
    """`exposures_repair` in its own transaction (the erasure follow-up)."""
    with transaction.atomic():
        return exposures_repair(shop_id=shop_id)


def exposures_extract(*, shop_id: int, now: datetime) -> ExtractResult:
    """Fold the shop's new exposure events into `ExperimentExposure`, batch by batch."""
    events = units = ignored = 0
    touched: set[int] = set()
    while True:
        with transaction.atomic():
            mark = _watermark_locked(shop_id)
            upto = _processed_position(shop_id)
            rows = _rows_read(shop_id, mark.position, upto)
            folds, skipped = _fold(rows, shop_id)
            _folds_store(folds)
            is_full = len(rows) == BATCH_SIZE
            mark.position = rows[-1].event_id if is_full else max(mark.position, upto)
            mark.save(update_fields=["position", "updated_at"])
        events, units, ignored = events + len(rows), units + len(folds), ignored + skipped
        touched.update(experiment_id for experiment_id, _, _ in folds)
        if not is_full:
            break
    repaired = exposures_repair_run(shop_id=shop_id)
    return ExtractResult(
        events=events,
        units=units,
        ignored=ignored,
        repaired=repaired,
        experiment_ids=frozenset(touched),
    )
